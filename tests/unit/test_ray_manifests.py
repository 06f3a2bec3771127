"""RayCluster manifests shaped by the workload policy: valid under KubeRay's CRD schema, with
the fields the ray room promises (token auth, head without CPUs, /dev/shm in memory, labels,
the owner's pod as owner, names ≤ 53), and a cluster request's refusals naming the field."""

import pytest

from crater_hub.accelerators import Accelerator
from crater_hub.policy import profiles, workload
from crater_hub.policy.ledger import RAY, Holding, Ledger
from crater_hub.policy.quotas import Quota
from crater_hub.ray import manifests, options
from tests.reference import crd_errors

T4 = Accelerator("t4", "NVIDIA T4", "nvidia.com/gpu", {"nvidia.com/gpu.product": "NVIDIA-Tesla-T4"},
                 env="NVIDIA_VISIBLE_DEVICES")
CATALOG = {"t4": T4}
PROFILES = profiles.parse([
    {"slug": "cpu", "display_name": "CPU", "default": True,
     "cpu": {"guarantee": 0.5, "limit": 2}, "memory": {"guarantee": "1Gi", "limit": "4Gi"}},
    {"slug": "gpu", "display_name": "GPU", "cpu": {"guarantee": 2, "limit": 8},
     "memory": {"guarantee": "8Gi", "limit": "32Gi"},
     "accelerators": [{"accelerator": "t4", "counts": [1, 2]}]},
], {"t4"})
IMAGE = "rayproject/ray:2.60.0"
POD = {"name": "jupyter-ada", "uid": "0f4c3a2e-1111-2222-3333-444455556666"}


def spec(**request):
    return workload.resolve(request, PROFILES, "ada", [], CATALOG, default_image=IMAGE)


def cluster(workers=2, name="ray-ada-abc", **request):
    return manifests.raycluster(name=name, namespace="jhub", owner="ada",
                                spec=spec(**request), workers=workers, ray_version="2.60.0",
                                image=spec(**request).image or IMAGE, server="", owner_pod=POD)


def test_a_gpu_cluster_is_valid_under_kuberays_schema_and_shaped_by_the_profile():
    rc = cluster(profile="gpu", accelerator="t4", gpus=1)
    assert crd_errors(rc) == []
    head = rc["spec"]["headGroupSpec"]
    group = rc["spec"]["workerGroupSpecs"][0]
    worker = group["template"]["spec"]["containers"][0]
    assert rc["spec"]["authOptions"] == {"mode": "token"}
    assert rc["spec"]["rayVersion"] == "2.60.0"
    assert head["rayStartParams"] == {"num-cpus": "0"}
    assert "nvidia.com/gpu" not in str(head)
    assert group["replicas"] == 2
    assert worker["image"] == IMAGE
    assert worker["resources"] == {"requests": {"cpu": "2", "memory": "8Gi", "nvidia.com/gpu": "1"},
                                   "limits": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}}
    assert group["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-Tesla-T4"}
    for pod in (head["template"]["spec"], group["template"]["spec"]):
        assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
        assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]
    meta = rc["metadata"]
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "crater-hub",
                              "crater.io/kind": "raycluster", "crater.io/owner": "ada"}
    assert meta["ownerReferences"][0]["uid"] == POD["uid"]
    assert meta["ownerReferences"][0]["kind"] == "Pod"


def test_a_cpu_cluster_asks_for_no_gpu_and_hides_the_nodes_gpus():
    rc = cluster(profile="cpu")
    assert crd_errors(rc) == []
    worker = rc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in worker["resources"]["limits"]
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"} in worker["env"]


@pytest.mark.parametrize("owner", ["ada", "Ada.Lovelace@example.org", "x" * 200, "é"])
def test_names_are_dns_labels_of_at_most_53_characters(owner):
    for suffix in (None, "a" * 16):
        name = manifests.cluster_name(owner, suffix)
        assert len(name) <= manifests.MAX_NAME and manifests.NAME.match(name), name
    assert manifests.cluster_name("bob", "x") != manifests.cluster_name("Bob", "x")


def test_state_comes_from_the_conditions_not_the_deprecated_state():
    rc = cluster()
    rc["status"] = {"state": "ready", "conditions": [{"type": "HeadPodReady", "status": "False"}]}
    assert manifests.state(rc) == "starting"
    rc["status"] = {"readyWorkerReplicas": 2, "conditions": [
        {"type": "HeadPodReady", "status": "True"}, {"type": "RayClusterProvisioned", "status": "True"}]}
    assert manifests.state(rc) == "ready"
    rc["spec"]["workerGroupSpecs"][0]["replicas"] = 3
    assert manifests.state(rc) == "scaling"
    model = manifests.model(rc)
    assert "token" not in model and model["owner"] == "ada" and model["gpus"] == 0


@pytest.mark.parametrize("body, field", [
    ({"workers": -1}, "workers"), ({"workers": "2"}, "workers"), ({"workers": 9}, "workers"),
    ({"workers": True}, "workers"), ({"lifetime": "forever"}, "lifetime"),
    ({"server": 3}, "server"), ({"name": "Has_Caps"}, "name"), ({"name": "x" * 17}, "name"),
    ({"nodes": 2}, "'nodes'"), ([1], "JSON object"),
])
def test_bad_requests_name_the_field(body, field):
    with pytest.raises(workload.PolicyError) as e:
        options.parse(body, max_workers=8)
    assert field in e.value.message and e.value.status == 400


def test_workload_fields_pass_through_to_the_policy():
    request = options.parse({"workers": 1, "accelerator": "t4", "gpus": 2, "profile": "gpu"}, 8)
    assert request.workload == {"accelerator": "t4", "gpus": 2, "profile": "gpu"}
    assert (request.workers, request.lifetime, request.server, request.name) == (1, "server", None, None)


def test_ray_clusters_count_in_the_one_ledger_with_servers():
    ledger = Ledger()
    quota = Quota(servers=3, gpus=4, accelerators={})
    ledger.hold("ada", ("server", ""), Holding("server", T4, 2))
    assert ledger.reserve("ada", (RAY, "ray-ada-a"), Holding(RAY, T4, 2), quota) is None
    why = ledger.reserve("ada", (RAY, "ray-ada-b"), Holding(RAY, T4, 1), quota)
    assert "4 of 4 in use" in why
    # a cluster is no server: the servers limit does not apply to it
    assert ledger.usage("ada").servers == 1


def test_scaling_sets_the_one_worker_group_and_refuses_clusters_with_others():
    from crater_hub.localkube.patch import json_patch

    rc = cluster(workers=2, profile="gpu", accelerator="t4", gpus=1)
    scaled = json_patch(rc, manifests.scale_patch(rc, 1))
    assert [g["replicas"] for g in scaled["spec"]["workerGroupSpecs"]] == [1]
    assert manifests.workers_of(scaled) == 1 and crd_errors(scaled) == []
    two = cluster(workers=2)
    two["spec"]["workerGroupSpecs"].append({**two["spec"]["workerGroupSpecs"][0], "groupName": "more"})
    with pytest.raises(ValueError, match="one worker group 'workers'"):
        manifests.scale_patch(two, 1)
    # the patch tests the group's name: a cluster changed since it was read is not scaled wrong
    renamed = cluster(workers=2)
    patch = manifests.scale_patch(renamed, 1)
    renamed["spec"]["workerGroupSpecs"][0]["groupName"] = "other"
    with pytest.raises(Exception, match="test operation failed"):
        json_patch(renamed, patch)


def test_with_kueue_a_cluster_is_created_suspended_in_the_local_queue_and_shown_queued():
    rc = manifests.raycluster(name="ray-ada-q", namespace="jhub", owner="ada",
                              spec=spec(profile="gpu", accelerator="t4", gpus=1), workers=2,
                              ray_version="2.60.0", image=IMAGE, server="", owner_pod=POD,
                              queue="research")
    assert crd_errors(rc) == []
    assert rc["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "research"
    assert rc["spec"]["suspend"] is True
    # the pods carry no queue label: Kueue manages the RayCluster, not its pods
    assert "kueue.x-k8s.io/queue-name" not in str(rc["spec"]["workerGroupSpecs"])
    assert (manifests.state(rc), manifests.model(rc)["queue"]) == ("queued", "research")
    rc["spec"]["suspend"] = False  # admitted: Kueue unsuspends it
    assert manifests.state(rc) == "starting"
    rc["metadata"]["deletionTimestamp"] = "2026-12-06T05:00:00Z"
    rc["spec"]["suspend"] = True
    assert manifests.state(rc) == "deleting"
