"""One localkube and one real hub for the whole e2e session; users made and removed per test."""

import itertools
import os
import statistics
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config

from crater_hub.localkube import LocalKubeProcess

from .hub import HubProcess, api_request, stop_server

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


@pytest.fixture
async def make_user(hub):
    """Create users through the REST API; stop their servers and delete them after the test."""
    made = []

    async def make(prefix="user"):
        name = f"{prefix}-{next(_user_numbers)}"
        r = await api_request(hub, f"users/{name}", "POST")
        assert r.code == 201, r
        made.append(name)
        return name

    yield make
    for name in made:
        await stop_server(hub, name)
        assert (await api_request(hub, f"users/{name}", "DELETE")).code == 204


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
