"""A hub's RayCluster under Kueue, on localkube's RayCluster controller; the test plays Kueue.

With the kueue job-queue backend the hub creates RayClusters labelled with the LocalQueue and
suspended. Kueue's RayCluster integration then makes a Workload owned by the cluster (a pod
set for the head, one per worker group), admits it when its ClusterQueue has room and
unsuspends the cluster, or suspends it again when it evicts it. Here the test does Kueue's
part (as tests/queue/test_kueue.py does for Jobs) and checks what the controller and the hub's
REST model make of it: no pod and ``queued`` until admitted, then pods and ``ready``; an
eviction takes the pods and shows ``queued`` again; the Workload goes with the cluster.
Everything made in Kueue's and the hub's name is validated against KubeRay's and Kueue's CRDs.
"""

import copy

import pytest
import pytest_asyncio

from crater_hub.localkube.gc import GarbageCollector
from crater_hub.localkube.raycluster import RayClusterController
from crater_hub.localkube.resources import resources_from_crd
from crater_hub.ray import manifests
from tests.localkube.helpers import wait_for
from tests.reference import crd_errors, load_reference
from tests.unit.test_ray_manifests import IMAGE, POD, spec

pytestmark = pytest.mark.asyncio

QUEUE = "crater"


@pytest_asyncio.fixture
async def cluster(make_cluster):
    c = make_cluster()
    for name in ("kuberay-ray.io_rayclusters.yaml", "kueue-workloads.yaml"):
        for res in resources_from_crd(load_reference(name)):
            c.registry.add(res)
    c.start(RayClusterController, GarbageCollector)
    c.rcs = c.registry.lookup("ray.io", "v1", "rayclusters")
    c.workloads = c.registry.lookup("kueue.x-k8s.io", "v1beta2", "workloads")
    return c


def hub_cluster(workers=2):
    """The RayCluster the hub creates for a 2 × T4 request with the kueue backend."""
    request = {"profile": "gpu", "accelerator": "t4", "gpus": 1}
    rc = manifests.raycluster(name="ray-ada-q", namespace="default", owner="ada", spec=spec(**request),
                              workers=workers, ray_version="2.60.0", image=IMAGE, server="",
                              owner_pod=POD, queue=QUEUE)
    del rc["metadata"]["ownerReferences"]  # (no server pod in this cluster)
    return rc


def workload_for(rc):
    """The Workload Kueue's RayCluster integration makes: owned by the cluster, one pod set for
    the head and one per worker group (count = replicas), in the cluster's LocalQueue."""
    meta = rc["metadata"]
    head = rc["spec"]["headGroupSpec"]
    pod_sets = [{"name": "head", "count": 1, "template": copy.deepcopy(head["template"])}]
    pod_sets += [{"name": g["groupName"], "count": g["replicas"], "template": copy.deepcopy(g["template"])}
                 for g in rc["spec"]["workerGroupSpecs"]]
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload",
        "metadata": {"name": f"raycluster-{meta['name']}-5c0de", "namespace": meta["namespace"],
                     "labels": {"kueue.x-k8s.io/job-uid": meta["uid"]},
                     "ownerReferences": [{"apiVersion": "ray.io/v1", "kind": "RayCluster",
                                          "name": meta["name"], "uid": meta["uid"],
                                          "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"queueName": meta["labels"][manifests.KUEUE_QUEUE_LABEL], "active": True,
                 "podSets": pod_sets},
    }


def condition(kind, status, reason, message=""):
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-12-06T05:00:00Z"}


def admission(workload):
    return {"admission": {"clusterQueue": "cluster-queue", "podSetAssignments": [
                {"name": p["name"], "count": p["count"], "flavors": {"nvidia.com/gpu": "t4"}}
                for p in workload["spec"]["podSets"]]},
            "conditions": [condition("QuotaReserved", "True", "QuotaReserved", "Quota reserved"),
                           condition("Admitted", "True", "Admitted", "The workload is admitted")]}


def rc_of(cluster):
    return cluster.store.find(cluster.rcs, "default", "ray-ada-q")


def pods_of(cluster):
    items, _ = cluster.store.list(cluster.res("", "pods"), "default")
    return [p for p in items if (p["metadata"].get("labels") or {}).get("ray.io/cluster") == "ray-ada-q"
            and not p["metadata"].get("deletionTimestamp")]


def suspend(cluster, value):
    cluster.store.mutate(cluster.rcs, "default", "ray-ada-q",
                         lambda o: o["spec"].__setitem__("suspend", value))


def set_workload_status(cluster, workload, status):
    def put(obj):
        obj["status"] = status
    body = {**workload, "status": status}
    assert crd_errors(body) == []
    cluster.store.mutate(cluster.workloads, "default", workload["metadata"]["name"], put,
                         subresource="status")


async def test_a_queued_cluster_starts_nothing_until_kueue_admits_it(cluster):
    body = hub_cluster()
    assert crd_errors(body) == []  # KubeRay's schema, with the queue label and suspend
    assert body["metadata"]["labels"][manifests.KUEUE_QUEUE_LABEL] == QUEUE
    made = cluster.store.create(cluster.rcs, body, "default")
    workload = workload_for(made)
    assert crd_errors(workload) == []
    cluster.store.create(cluster.workloads, workload, "default")
    set_workload_status(cluster, workload, {"conditions": [condition(
        "QuotaReserved", "False", "Pending", "couldn't assign flavors to pod set workers: "
        "insufficient unused quota for nvidia.com/gpu in flavor t4, 2 more needed")]})
    await wait_for(lambda: manifests.conditions(rc_of(cluster)).get("RayClusterSuspended") == "True",
                   message="the controller to see it suspended")
    assert pods_of(cluster) == []
    model = manifests.model(rc_of(cluster))
    assert (model["state"], model["queue"], model["workers"]) == ("queued", QUEUE, 2)

    # Kueue admits it and unsuspends it: the head and both workers come, then it is ready
    set_workload_status(cluster, workload, admission(workload))
    suspend(cluster, False)
    pods = await wait_for(lambda: len(pods_of(cluster)) == 3 and pods_of(cluster), message="3 pods")
    assert manifests.state(rc_of(cluster)) == "starting"
    for pod in pods:
        cluster.set_phase(pod["metadata"]["name"], "Running", podIP="100.64.0.9",
                          conditions=[{"type": "Ready", "status": "True"}])
    await wait_for(lambda: manifests.state(rc_of(cluster)) == "ready", message="ready")

    # evicted (preempted for a more important workload): Kueue suspends it again
    suspend(cluster, True)
    await wait_for(lambda: not pods_of(cluster), message="the pods to go on eviction")
    assert manifests.model(rc_of(cluster))["state"] == "queued"

    # the Workload is the cluster's: it goes with it
    cluster.store.delete(cluster.rcs, "default", "ray-ada-q")
    await wait_for(lambda: cluster.store.find(cluster.workloads, "default",
                                              workload["metadata"]["name"]) is None,
                   message="the Workload to follow its RayCluster")


async def test_without_a_queue_the_cluster_is_not_suspended_and_carries_no_queue_label():
    request = {"profile": "gpu", "accelerator": "t4", "gpus": 1}
    rc = manifests.raycluster(name="ray-ada-n", namespace="default", owner="ada", spec=spec(**request),
                              workers=1, ray_version="2.60.0", image=IMAGE)
    assert "suspend" not in rc["spec"] and manifests.KUEUE_QUEUE_LABEL not in rc["metadata"]["labels"]
    assert manifests.model(rc)["queue"] is None and manifests.state(rc) == "starting"
