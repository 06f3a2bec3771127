"""A fresh in-process localkube per test, with kubernetes_asyncio clients over real HTTP."""

from types import SimpleNamespace

import pytest
from kubernetes_asyncio import client, config

from crater_hub.localkube import LocalKube


@pytest.fixture
async def make_kube(tmp_path):
    started = []

    async def make(**kwargs):
        lk = LocalKube(state_dir=tmp_path / f"state{len(started)}", **kwargs)
        await lk.start()
        path = lk.write_kubeconfig(tmp_path / f"kubeconfig{len(started)}")
        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(path), client_configuration=cfg)
        api = client.ApiClient(cfg)
        started.append((lk, api))
        return SimpleNamespace(
            lk=lk, api=api, kubeconfig=path,
            core=client.CoreV1Api(api), batch=client.BatchV1Api(api),
            custom=client.CustomObjectsApi(api), ext=client.ApiextensionsV1Api(api),
        )

    yield make
    for lk, api in started:
        await api.close()
        await lk.stop()


@pytest.fixture
async def kube(make_kube):
    return await make_kube()
