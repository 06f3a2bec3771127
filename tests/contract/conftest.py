"""A fresh in-process localkube per test, with kubernetes_asyncio clients over real HTTP, and the
real ``kubectl`` (Debian package kubernetes-client) pointed at it."""

import asyncio
import shutil
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


@pytest.fixture
def kubectl(kube):
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.fail("kubectl is required for these tests: install the Debian package kubernetes-client "
                    "(apt-get install kubernetes-client)")

    async def run(*args, check=True, stdin=None, split=False):
        """kubectl's output, stdout then stderr; ``split=True``: the pair (stdout, stderr)."""
        proc = await asyncio.create_subprocess_exec(
            binary, "--kubeconfig", str(kube.kubeconfig), *args, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 60)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {err.decode()}")
        return (out.decode(), err.decode()) if split else out.decode() + err.decode()

    return run
