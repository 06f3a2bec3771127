"""The job-pod tests' own localkube and hubs (``crater-jobpods.yaml``), so that their servers and
jobs never compete with other suites' for the demo cluster's GPUs.

``hub`` is the default setup (``Crater.job_home = "auto"``, jobs in the servers' namespace);
``homeless_hub`` runs with ``job_home = "never"`` in a namespace of its own (two hubs' queues
must not share one: their Jobs would have the same names).
"""

import itertools
import json
import urllib.request
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from crater_hub.localkube import LocalKubeProcess
from tests.localkube_api import api_client

from ..e2e.hub import HubProcess, api_request, stop_all_servers

CONFIG = Path(__file__).with_name("crater-jobpods.yaml")
HOMELESS_NS = "homeless"


@pytest.fixture(scope="session")
def jobpods_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("jobpods")


@pytest.fixture(scope="session")
def cluster(jobpods_dir):
    process = LocalKubeProcess(jobpods_dir / "localkube", tie_to_parent=True).start(timeout=60)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def hub(jobpods_dir, cluster):
    process = HubProcess(jobpods_dir / "hub", cluster.kubeconfig, slow_spawn_timeout=10,
                         env={"CRATER_CONFIG_FILE": str(CONFIG)}).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def homeless_hub(jobpods_dir, cluster):
    body = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": HOMELESS_NS}})
    with urllib.request.urlopen(urllib.request.Request(
            f"{cluster.url}/api/v1/namespaces", body.encode(), method="POST",
            headers={"Content-Type": "application/json"}), timeout=10) as r:
        assert r.status == 201
    process = HubProcess(jobpods_dir / "homeless-hub", cluster.kubeconfig, slow_spawn_timeout=10,
                         env={"CRATER_CONFIG_FILE": str(CONFIG)},
                         extra_args=["--Crater.job_home=never",
                                     f"--KubeSpawner.namespace={HOMELESS_NS}"]).start()
    yield process
    process.stop()


@pytest.fixture
async def core(cluster):
    """CoreV1Api on the tests' localkube, to read what the hub made."""
    async with api_client(cluster.kubeconfig) as api:
        yield client.CoreV1Api(api)


_numbers = itertools.count()


def _maker(hub):
    made = []

    async def make(prefix="jp"):
        name = f"{prefix}-{next(_numbers)}"
        r = await api_request(hub, f"users/{name}", "POST")
        assert r.code == 201, r
        r = await api_request(hub, f"users/{name}/tokens", "POST", {"note": "job pod tests"})
        assert r.code == 201, r
        made.append(name)
        return name, r.data["token"]

    async def cleanup():
        r = await api_request(hub, "crater/jobs?all=1&state=queued&state=admitted&state=running")
        for job in r.data["jobs"] if r.code == 200 else ():
            if job["owner"] in made:
                await api_request(hub, f"crater/jobs/{job['id']}", "DELETE")
        for name in made:
            await stop_all_servers(hub, name)

    return make, cleanup


@pytest.fixture
async def make_user(hub):
    """``await make_user()`` -> (name, token) on ``hub``; their jobs cancelled, servers stopped."""
    make, cleanup = _maker(hub)
    yield make
    await cleanup()


@pytest.fixture
async def make_homeless_user(homeless_hub):
    make, cleanup = _maker(homeless_hub)
    yield make
    await cleanup()
