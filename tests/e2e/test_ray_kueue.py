"""Ray clusters through a hub whose job queue is Kueue; the test plays Kueue's RayCluster
integration (as tests/queue/test_kueue.py does for Jobs). One head-only cluster, real Ray.

The hub creates the cluster in the configured LocalQueue, suspended: the REST API shows it
``queued`` and localkube's RayCluster controller starts no pod. Kueue (the test) makes its
Workload — owned by the cluster, a pod set per Ray group — admits it and unsuspends it: the
head starts and the cluster becomes ``ready``. An eviction (Kueue suspends it again) takes the
pod and shows ``queued`` again; deleting the cluster takes the Workload along.
"""

import asyncio
import copy
import os

import pytest

from crater_hub.ray import manifests
from tests.helpers import wait_for
from tests.reference import crd_errors

from .conftest import DEMO_CRATER, install_crd
from .hub import HubProcess, api_request, spawn, stop_server
from .test_ray import NS, ray_pods

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="Ray binds wildcard ports: pods need their own network namespace"),
]
pytest.importorskip("ray", reason="the test extra installs ray[default]")

LOCAL_QUEUE = "research"
USER = "ray-kueue-ann"
WORKLOADS = ("kueue.x-k8s.io", "v1beta2", NS, "workloads")
MERGE = "application/merge-patch+json"


def install_crds(localkube):
    """KubeRay's RayCluster CRD and Kueue's Workload CRD, as their charts would install them."""
    for name in ("kuberay-ray.io_rayclusters.yaml", "kueue-workloads.yaml"):
        install_crd(localkube, name)


@pytest.fixture(scope="module")
def kueue_hub(e2e_dir, localkube):
    install_crds(localkube)
    process = HubProcess(e2e_dir / "ray-kueue-hub", localkube.kubeconfig, slow_spawn_timeout=10,
                         env={"CRATER_CONFIG_FILE": str(DEMO_CRATER)},
                         extra_args=["--Crater.job_queue_backend=kueue",
                                     f"--Crater.job_kueue_local_queue={LOCAL_QUEUE}"]).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def token(kueue_hub):
    """ann, with a running CPU server; her token. (Each step on a loop of its own.)"""
    async def setup():
        assert (await api_request(kueue_hub, f"users/{USER}", "POST")).code == 201
        r = await api_request(kueue_hub, f"users/{USER}/tokens", "POST", {"note": "test"})
        await spawn(kueue_hub, USER, {"profile": "cpu"})
        return r.data["token"]

    async def teardown():
        await stop_server(kueue_hub, USER)
        assert (await api_request(kueue_hub, f"users/{USER}", "DELETE")).code == 204

    yield asyncio.run(setup())
    asyncio.run(teardown())


def workload_for(rc):
    """The Workload Kueue's RayCluster integration makes for ``rc``."""
    meta = rc["metadata"]
    sets = [{"name": "head", "count": 1, "template": copy.deepcopy(rc["spec"]["headGroupSpec"]["template"])}]
    sets += [{"name": g["groupName"], "count": g["replicas"], "template": copy.deepcopy(g["template"])}
             for g in rc["spec"]["workerGroupSpecs"]]
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload",
        "metadata": {"name": f"raycluster-{meta['name']}-1a2b3", "namespace": NS,
                     "labels": {"kueue.x-k8s.io/job-uid": meta["uid"]},
                     "ownerReferences": [{"apiVersion": "ray.io/v1", "kind": "RayCluster",
                                          "name": meta["name"], "uid": meta["uid"],
                                          "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"queueName": meta["labels"][manifests.KUEUE_QUEUE_LABEL], "active": True,
                 "podSets": sets},
    }


def admitted(workload):
    when = "2026-12-06T05:00:00Z"
    return {**workload, "status": {
        "admission": {"clusterQueue": "cluster-queue", "podSetAssignments": [
            {"name": p["name"], "count": p["count"], "flavors": {"cpu": "default-flavor"}}
            for p in workload["spec"]["podSets"]]},
        "conditions": [
            {"type": "QuotaReserved", "status": "True", "reason": "QuotaReserved",
             "message": "Quota reserved in ClusterQueue cluster-queue", "lastTransitionTime": when},
            {"type": "Admitted", "status": "True", "reason": "Admitted",
             "message": "The workload is admitted", "lastTransitionTime": when}]}}


async def test_a_cluster_waits_queued_in_kueue_and_runs_once_admitted(kueue_hub, token, kube):
    core, custom = kube

    async def model(name):
        r = await api_request(kueue_hub, f"crater/ray/clusters/{name}", token=token)
        assert r.code == 200, r
        return r.data

    r = await api_request(kueue_hub, "crater/ray/clusters", "POST", token=token, body={
        "profile": "cpu", "accelerator": None, "workers": 0, "server": "", "name": "q"})
    assert r.code == 201, r
    name = r.data["name"]
    assert (r.data["state"], r.data["queue"]) == ("queued", LOCAL_QUEUE), r.data
    rc = await custom.get_namespaced_custom_object("ray.io", "v1", NS, "rayclusters", name)
    assert rc["metadata"]["labels"][manifests.KUEUE_QUEUE_LABEL] == LOCAL_QUEUE and rc["spec"]["suspend"]

    async def seen_suspended():
        got = await custom.get_namespaced_custom_object("ray.io", "v1", NS, "rayclusters", name)
        return manifests.conditions(got).get("RayClusterSuspended") == "True" and got

    rc = await wait_for(seen_suspended, timeout=30, interval=0.2, message="the controller to hold it")
    assert await ray_pods(core, name) == [] and (await model(name))["state"] == "queued"

    # Kueue: the cluster's Workload, admitted; then the cluster unsuspended
    workload = workload_for(rc)
    assert crd_errors(workload) == []
    made = await custom.create_namespaced_custom_object(*WORKLOADS, workload)
    status = admitted(made)
    assert crd_errors(status) == []
    await custom.replace_namespaced_custom_object_status(*WORKLOADS, workload["metadata"]["name"], status)
    await custom.patch_namespaced_custom_object("ray.io", "v1", NS, "rayclusters", name,
                                                {"spec": {"suspend": False}}, _content_type=MERGE)

    async def ready():
        got = await model(name)
        return got if got["state"] == "ready" else None

    await wait_for(ready, timeout=180, interval=1, message="the admitted cluster to be ready")
    assert len(await ray_pods(core, name)) == 1

    # evicted: Kueue suspends it again; its pod goes and it is queued again
    await custom.patch_namespaced_custom_object("ray.io", "v1", NS, "rayclusters", name,
                                                {"spec": {"suspend": True}}, _content_type=MERGE)

    async def requeued():
        return not await ray_pods(core, name) and (await model(name))["state"] == "queued"

    await wait_for(requeued, timeout=60, interval=0.5, message="the evicted cluster to be queued")

    r = await api_request(kueue_hub, f"crater/ray/clusters/{name}", "DELETE", token=token)
    assert r.code == 204, r

    async def workload_gone():
        listed = await custom.list_namespaced_custom_object(*WORKLOADS)
        return not [w for w in listed["items"] if w["metadata"]["name"] == workload["metadata"]["name"]]

    await wait_for(workload_gone, timeout=60, interval=0.5, message="the Workload to go with its cluster")
