"""The demo platform that the e2e, browser and client tests share: one localkube, the plain hub
and the hub with the demo crater profiles, each started once per session (not once per test
folder: three of each would each poll and hold memory to the session's end); users are made and
removed per test.

Other folders (queue, jobpods, images, gpus) start clusters and hubs of their own, configured for
what they test; their conftest's fixtures of the same names (``hub``, ``core``, ``make_user``)
take precedence there.
"""

import pytest
from kubernetes_asyncio import client

from crater_hub.localkube import LocalKubeProcess
from tests.localkube_api import api_client

from .e2e.hub import DEMO_CRATER, HubProcess, processes_mentioning, user_maker


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



@pytest.fixture
async def core(localkube):
    """CoreV1Api on the session's localkube, to check what the hub did in the cluster."""
    async with api_client(localkube.kubeconfig) as api:
        yield client.CoreV1Api(api)


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


