"""The e2e tests' helpers on the session's demo platform (``tests/conftest.py``): CRDs installed as
their charts would, settings files for a module's own hub, a kube client, spawn times."""

import json
import statistics
import urllib.error
import urllib.request

import pytest
import yaml
from kubernetes_asyncio import client

from tests.localkube_api import api_client
from tests.reference import load_reference

from .hub import DEMO_CRATER

SPAWN_TIMES = pytest.StashKey[list]()


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
    async with api_client(localkube.kubeconfig) as api:
        yield client.CoreV1Api(api), client.CustomObjectsApi(api)


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
