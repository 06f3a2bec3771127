"""A Ray profile's spawn whose RayCluster the cluster refuses: the server it was made for is
stopped, the quota both reserved is given back, the owner is told why, and nothing is left; a
REST create refused the same way is a 503 that says it.

The refusal is a real one: on a localkube of this module alone, KubeRay's CRD is deleted after
the hub started (an operator uninstalling KubeRay under a running hub), so the hub's RayCluster
cache is loaded and the create is answered 404 by the API server, after the server's pod exists.
"""

import json
import re
import urllib.request

import pytest

from crater_hub.localkube import LocalKubeProcess

from .conftest import crater_file, install_kuberay_crd
from .hub import HubProcess, api_request, progress_events, request_spawn, server_of, user_maker
from .test_ray_profile import RAY_PROFILE

NS = "default"


@pytest.fixture(scope="module")
def refusing_cluster(e2e_dir):
    cluster = LocalKubeProcess(e2e_dir / "ray-refused-localkube", tie_to_parent=True).start(timeout=60)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def refusing_hub(e2e_dir, refusing_cluster):
    install_kuberay_crd(refusing_cluster)
    state = e2e_dir / "ray-refused-hub"
    crater_file(state / "crater.yaml", profiles=[RAY_PROFILE])
    process = HubProcess(state, refusing_cluster.kubeconfig,
                         env={"CRATER_CONFIG_FILE": str(state / "crater.yaml")}).start()
    yield process
    process.stop()


def kube_get(cluster, path):
    with urllib.request.urlopen(f"{cluster.url}{path}", timeout=10) as r:
        return json.load(r)


def uninstall_kuberay(cluster):
    req = urllib.request.Request(
        f"{cluster.url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/rayclusters.ray.io",
        method="DELETE")
    urllib.request.urlopen(req, timeout=10).close()


async def test_a_refused_cluster_stops_its_server_and_gives_back_the_quota(refusing_cluster, refusing_hub):
    make, cleanup = user_maker(refusing_hub)
    try:
        user = await make("rayr")
        token = (await api_request(refusing_hub, f"users/{user}/tokens", "POST", {"note": "t"})).data["token"]

        async def gpus_left():
            return (await api_request(refusing_hub, "crater/profiles", token=token)).data["quota"]["gpus"]

        assert await gpus_left() == 4
        uninstall_kuberay(refusing_cluster)
        r = await request_spawn(refusing_hub, user, {"profile": "ray", "workers": 1})
        assert r.code == 202, r  # the refusal comes after the pod: through the progress stream
        events = await progress_events(refusing_hub, user)
        assert events[-1].get("failed"), events
        message = events[-1]["message"]
        assert message.startswith("Spawn failed: Ray cluster ray-rayr-"), message
        assert message.endswith(" could not be created: the Kubernetes API answered 404 (the server could "
                                "not find the requested resource); is KubeRay installed? Its RayCluster "
                                "CRD is not served"), message
        # the server is stopped with its pod, the GPU its worker reserved is free again
        assert await server_of(refusing_hub, user) is None
        pods = kube_get(refusing_cluster, f"/api/v1/namespaces/{NS}/pods"
                        f"?labelSelector=hub.jupyter.org/username%3D{user}")["items"]
        assert [p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")] == []
        assert await gpus_left() == 4
        log = refusing_hub.log_file.read_text(errors="replace")
        assert re.search(rf"Ray cluster ray-rayr-\S+ of {user} failed: .*; stopping the server", log)
        # the REST create meets the same refusal: a 503 saying it, nothing held
        r = await api_request(refusing_hub, "crater/ray/clusters", "POST", {
            "profile": "gpu", "accelerator": "t4", "gpus": 1, "workers": 1, "lifetime": "idle"}, token)
        assert r.code == 503 and "could not be created: the Kubernetes API answered 404" in r.data["message"], r
        assert r.data["message"].endswith("is KubeRay installed? Its RayCluster CRD is not served"), r
        assert await gpus_left() == 4
    finally:
        await cleanup()
