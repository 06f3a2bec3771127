"""Clients of a localkube over HTTP, as the hub has them (kubernetes_asyncio from a kubeconfig):
``api_client(kubeconfig)`` for a localkube process the tests started, and ``localkube_api(...)``
for an in-process localkube on a cluster file with its ``CoreV1Api``
(``async with localkube_api(...) as (lk, core)``)."""

import contextlib

from kubernetes_asyncio import client, config

from crater_hub.localkube import LocalKube


@contextlib.asynccontextmanager
async def api_client(kubeconfig):
    """A kubernetes_asyncio ``ApiClient`` configured from ``kubeconfig``, closed on exit."""
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    async with client.ApiClient(cfg) as api:
        yield api


@contextlib.asynccontextmanager
async def localkube_api(cluster_file, state_dir, kubeconfig):
    lk = LocalKube(cluster_file=cluster_file, state_dir=state_dir)
    await lk.start()
    try:
        async with api_client(lk.write_kubeconfig(kubeconfig)) as api:
            yield lk, client.CoreV1Api(api)
    finally:
        await lk.stop()
