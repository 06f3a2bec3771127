"""An in-process localkube on a cluster file and a ``CoreV1Api`` talking to it over HTTP, for
fixtures that need both (``async with localkube_api(...) as (lk, core)``)."""

import contextlib

from kubernetes_asyncio import client, config

from crater_hub.localkube import LocalKube


@contextlib.asynccontextmanager
async def localkube_api(cluster_file, state_dir, kubeconfig):
    lk = LocalKube(cluster_file=cluster_file, state_dir=state_dir)
    await lk.start()
    try:
        path = lk.write_kubeconfig(kubeconfig)
        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(path), client_configuration=cfg)
        api = client.ApiClient(cfg)
        try:
            yield lk, client.CoreV1Api(api)
        finally:
            await api.close()
    finally:
        await lk.stop()
