"""One localkube and one real hub for the whole e2e session; users made and removed per test."""

import itertools
import json
import os
import statistics
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client, config

from crater_hub.localkube import LocalKubeProcess
from tests.reference import load_reference

from .hub import REPO, HubProcess, api_request, stop_all_servers

DEMO_CRATER = REPO / "crater_hub" / "localkube" / "demo-crater.yaml"

SPAWN_TIMES = pytest.StashKey[list]()


def processes_mentioning(text):
    """PIDs (other than ours) whose command line or environment contains ``text``."""
    needle = text.encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes()
            environ = Path(entry.path, "environ").read_bytes()
        except OSError:  # exited meanwhile, or not ours to read
            continue
        if needle in cmdline or needle in environ:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory):
    """The session's state; at the end, no process that used it may remain (pods, hub, proxy)."""
    root = tmp_path_factory.mktemp("e2e")
    yield root
    leftovers = processes_mentioning(str(root))
    assert not leftovers, f"processes left behind: {leftovers}"


@pytest.fixture(scope="session")
def localkube(e2e_dir):
    # Tied to pytest: if the session is killed, localkube and its pods go with it.
    cluster = LocalKubeProcess(e2e_dir / "localkube", tie_to_parent=True).start(timeout=60)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def hub(e2e_dir, localkube):
    process = HubProcess(e2e_dir / "hub", localkube.kubeconfig).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def crater_hub(e2e_dir, localkube):
    """The hub configured with the demo profiles (CPU, GPU with T4/A100, ml-staff's A100 × 4).

    JupyterHub's default ``slow_spawn_timeout`` (10 s): a refused spawn is the POST's answer.
    """
    process = HubProcess(e2e_dir / "crater-hub", localkube.kubeconfig, slow_spawn_timeout=10,
                         env={"CRATER_CONFIG_FILE": str(DEMO_CRATER)}).start()
    yield process
    process.stop()


def install_crd(localkube, reference):
    """A CRD of ``../shared/reference`` in the session's localkube, as its chart would install it
    (already there: installed by an earlier module)."""
    req = urllib.request.Request(localkube.url + "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                                 data=json.dumps(load_reference(reference)).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=10).close()
    except urllib.error.HTTPError as e:
        assert e.code == 409, e


def install_kuberay_crd(localkube):
    """KubeRay's RayCluster CRD, as the KubeRay chart would install it."""
    install_crd(localkube, "kuberay-ray.io_rayclusters.yaml")


def crater_file(path, profiles=(), **crater):
    """The demo settings with ``profiles`` added and ``crater`` (``Crater.*`` settings) set,
    written to ``path`` (for a hub of a module's own)."""
    settings = yaml.safe_load(DEMO_CRATER.read_text())
    settings["Crater"]["profiles"].extend(profiles)
    settings["Crater"].update(crater)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture
async def kube(localkube):
    """``(CoreV1Api, CustomObjectsApi)`` on the session's localkube."""
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(localkube.kubeconfig), client_configuration=cfg)
    async with client.ApiClient(cfg) as api:
        yield client.CoreV1Api(api), client.CustomObjectsApi(api)


@pytest.fixture
async def core(localkube):
    """CoreV1Api on the session's localkube, to check what the hub did in the cluster."""
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(localkube.kubeconfig), client_configuration=configuration
    )
    async with client.ApiClient(configuration) as api:
        yield client.CoreV1Api(api)


_user_numbers = itertools.count()


def user_maker(hub):
    """A factory making users through the REST API, and the cleanup that removes them."""
    made = []

    async def make(prefix="user"):
        name = f"{prefix}-{next(_user_numbers)}"
        r = await api_request(hub, f"users/{name}", "POST")
        assert r.code == 201, r
        made.append(name)
        return name

    async def cleanup():
        for name in made:
            await stop_all_servers(hub, name)
            assert (await api_request(hub, f"users/{name}", "DELETE")).code == 204

    return make, cleanup


@pytest.fixture
async def make_user(hub):
    """Users on the plain hub; their servers stopped and the users deleted after the test."""
    make, cleanup = user_maker(hub)
    yield make
    await cleanup()


@pytest.fixture
async def make_crater_user(crater_hub):
    """Users on the hub with the demo crater profiles; removed after the test."""
    make, cleanup = user_maker(crater_hub)
    yield make
    await cleanup()


@pytest.fixture
def spawn_times(request):
    """Where tests record spawn wall times; the session prints their median at the end."""
    return request.config.stash.setdefault(SPAWN_TIMES, [])


def pytest_terminal_summary(terminalreporter, config):
    times = config.stash.get(SPAWN_TIMES, [])
    if times:
        terminalreporter.write_line(
            f"spawn wall time (POST to ready, real hub on localkube): n={len(times)}, "
            f"median {statistics.median(times):.2f}s, min {min(times):.2f}s, max {max(times):.2f}s"
        )
