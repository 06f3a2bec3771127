"""The scheduler places pods as kube-scheduler would, and says why when it cannot."""

import json

import pytest

from crater_hub.localkube.devices import DEVICES_ANNOTATION, device_env_for_pod
from crater_hub.localkube.scheduler import Scheduler
from tests.localkube.helpers import wait_for

pytestmark = pytest.mark.asyncio


def gpus(n, cpu=None):
    limits = {"nvidia.com/gpu": str(n)}
    if cpu:
        limits["cpu"] = cpu
    return [{"name": "main", "image": "busybox:1.36", "resources": {"limits": limits}}]


def asking(**requests):
    return [{"name": "main", "image": "busybox:1.36", "resources": {"requests": requests}}]


def devices_of(pod):
    return json.loads(pod["metadata"].get("annotations", {}).get(DEVICES_ANNOTATION, "{}"))


async def scheduled(cluster, name):
    pod = await wait_for(
        lambda: (cluster.pod(name) or {}).get("spec", {}).get("nodeName") and cluster.pod(name),
        timeout=5,
        message=f"{name} scheduled",
    )
    return pod


async def unschedulable(cluster, name):
    """The message of the pod's PodScheduled=False/Unschedulable condition and FailedScheduling event."""

    def failed():
        conds = {c["type"]: c for c in cluster.pod(name).get("status", {}).get("conditions", [])}
        cond = conds.get("PodScheduled") or {}
        if cond.get("status") != "False" or cond.get("reason") != "Unschedulable":
            return None
        return [
            e for e in cluster.events(name, "FailedScheduling") if e["message"] == cond["message"]
        ]

    (event,) = await wait_for(failed, timeout=5, message=f"{name} unschedulable")
    pod = cluster.pod(name)
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")
    assert event["type"] == "Warning" and event["source"]["component"] == "default-scheduler"
    return event["message"]


async def test_gpu_pods_get_distinct_devices_and_a_scheduled_event(make_cluster):
    cluster = make_cluster()
    cluster.start(Scheduler)
    on_a100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    cluster.create_pod("first", gpus(2), nodeSelector=on_a100)
    first = await scheduled(cluster, "first")
    assert first["spec"]["nodeName"] == "gpu-a100-0"
    assert devices_of(first) == {"nvidia.com/gpu": ["0", "1"]}
    conditions = {c["type"]: c for c in first["status"]["conditions"]}
    assert conditions["PodScheduled"]["status"] == "True"
    (event,) = cluster.events("first", "Scheduled")
    assert event["message"] == "Successfully assigned default/first to gpu-a100-0"
    assert event["source"]["component"] == "default-scheduler"

    cluster.create_pod("second", gpus(2), nodeSelector=on_a100)
    second = await scheduled(cluster, "second")
    assert devices_of(second) == {"nvidia.com/gpu": ["2", "3"]}
    node = cluster.store.get(cluster.res("", "nodes"), None, "gpu-a100-0")
    assert device_env_for_pod(second, node) == {"NVIDIA_VISIBLE_DEVICES": "2,3"}


async def test_gpu_pod_goes_to_a_node_with_enough_free_gpus(make_cluster):
    cluster = make_cluster()
    cluster.start(Scheduler)
    cluster.create_pod("big", gpus(6))  # only the T4 node has 8
    pod = await scheduled(cluster, "big")
    assert pod["spec"]["nodeName"] == "gpu-t4-0"
    ids = devices_of(pod)["nvidia.com/gpu"]
    assert len(ids) == len(set(ids)) == 6


async def test_pod_larger_than_any_node_stays_pending_with_the_real_message(make_cluster):
    cluster = make_cluster()
    cluster.start(Scheduler)
    cluster.create_pod("huge", gpus(16))
    assert await unschedulable(cluster, "huge") == (
        "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. "
        "preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    )


async def test_reasons_are_counted_per_node_and_sorted_like_kube_scheduler(make_cluster):
    cluster = make_cluster()
    cluster.start(Scheduler)
    # 5 GPUs fit no A100 (4) and the cpu-only node has none; the T4 node is excluded by affinity.
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {
                                "key": "nvidia.com/gpu.product",
                                "operator": "NotIn",
                                "values": ["NVIDIA-Tesla-T4"],
                            }
                        ]
                    }
                ]
            }
        }
    }
    cluster.create_pod("picky", gpus(5), affinity=affinity)
    assert await unschedulable(cluster, "picky") == (
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "2 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: "
        "1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
    )


async def test_cpu_memory_and_pod_count_are_checked_against_allocatable(make_cluster):
    cluster = make_cluster(
        {
            "nodes": [
                {"name": "small", "capacity": {"cpu": 4, "memory": "8Gi", "pods": 1}},
                {
                    "name": "large",
                    "capacity": {"cpu": 32, "memory": "64Gi"},
                    "allocatable": {"cpu": 30},
                },
            ]
        }
    )
    cluster.start(Scheduler)
    cluster.create_pod("hog", asking(cpu="31"))
    assert await unschedulable(cluster, "hog") == (
        "0/2 nodes are available: 2 Insufficient cpu. "
        "preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
    )
    cluster.create_pod(
        "one", asking(cpu="1", memory="1Gi"), nodeSelector={"kubernetes.io/hostname": "small"}
    )
    assert (await scheduled(cluster, "one"))["spec"]["nodeName"] == "small"
    cluster.create_pod("two", asking(cpu="1", memory="70Gi"))
    assert await unschedulable(
        cluster, "two"
    ) == (  # the histogram sorts as strings, counts included
        "0/2 nodes are available: 1 Too many pods, 2 Insufficient memory. "
        "preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
    )


async def test_init_containers_count_at_their_peak_not_their_sum(make_cluster):
    cluster = make_cluster({"nodes": [{"name": "n", "capacity": {"cpu": 4, "memory": "8Gi"}}]})
    cluster.start(Scheduler)
    init = [
        {"name": f"init{i}", "image": "busybox:1.36", "resources": {"requests": {"cpu": "3"}}}
        for i in range(3)
    ]
    cluster.create_pod("staged", asking(cpu="2"), initContainers=init)
    assert (await scheduled(cluster, "staged"))["spec"]["nodeName"] == "n"
    cluster.create_pod(
        "greedy",
        asking(cpu="1"),
        initContainers=[
            {"name": "init", "image": "busybox:1.36", "resources": {"requests": {"cpu": "5"}}}
        ],
    )
    assert (await unschedulable(cluster, "greedy")).startswith(
        "0/1 nodes are available: 1 Insufficient cpu."
    )


@pytest.mark.parametrize(
    "affinity_term, node",
    [
        (
            {
                "matchExpressions": [
                    {
                        "key": "nvidia.com/gpu.product",
                        "operator": "In",
                        "values": ["NVIDIA-Tesla-T4"],
                    }
                ]
            },
            "gpu-t4-0",
        ),
        (
            {
                "matchExpressions": [
                    {"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["20000"]}
                ]
            },
            "gpu-a100-0",
        ),
        (
            {
                "matchExpressions": [
                    {"key": "nvidia.com/gpu.count", "operator": "Lt", "values": ["5"]}
                ]
            },
            "gpu-a100-0",
        ),
        (
            {"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"}]},
            "cpu-0",
        ),
        (
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gpu-t4-0"]}]},
            "gpu-t4-0",
        ),
    ],
)
async def test_required_node_affinity(make_cluster, affinity_term, node):
    cluster = make_cluster()
    cluster.start(Scheduler)
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "no-such-label", "operator": "Exists"}]},
                    affinity_term,
                ]
            }
        }
    }
    cluster.create_pod("placed", affinity=affinity)
    assert (await scheduled(cluster, "placed"))["spec"]["nodeName"] == node


async def test_node_selector_that_matches_nothing(make_cluster):
    cluster = make_cluster()
    cluster.start(Scheduler)
    cluster.create_pod("lost", nodeSelector={"nvidia.com/gpu.product": "H100"})
    assert await unschedulable(cluster, "lost") == (
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. "
        "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    )


TAINTED = {
    "nodes": [
        {
            "name": "gpu",
            "capacity": {"cpu": 8, "memory": "32Gi", "nvidia.com/gpu": 2},
            "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
        },
        {"name": "cordoned", "capacity": {"cpu": 8, "memory": "32Gi"}, "unschedulable": True},
        {
            "name": "soft",
            "capacity": {"cpu": 1, "memory": "1Gi"},
            "taints": [
                {"key": "spot", "effect": "PreferNoSchedule"},
                {"key": "edge", "effect": "NoExecute"},
            ],
        },
    ]
}


async def test_taints_and_unschedulable_nodes(make_cluster):
    cluster = make_cluster(TAINTED)
    cluster.start(Scheduler)
    cluster.create_pod("plain")
    assert await unschedulable(cluster, "plain") == (
        "0/3 nodes are available: 1 node(s) had untolerated taint {edge: }, "
        "1 node(s) had untolerated taint {nvidia.com/gpu: present}, 1 node(s) were unschedulable. "
        "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    )
    cluster.create_pod(
        "tolerant",
        gpus(1),
        tolerations=[
            {
                "key": "nvidia.com/gpu",
                "operator": "Equal",
                "value": "present",
                "effect": "NoSchedule",
            }
        ],
    )
    assert (await scheduled(cluster, "tolerant"))["spec"]["nodeName"] == "gpu"
    cluster.create_pod("wrong-value", tolerations=[{"key": "nvidia.com/gpu", "value": "absent"}])
    await unschedulable(cluster, "wrong-value")
    cluster.create_pod(
        "edge", tolerations=[{"key": "edge", "operator": "Exists", "effect": "NoExecute"}]
    )
    assert (await scheduled(cluster, "edge"))["spec"]["nodeName"] == "soft"
    cluster.create_pod(
        "anything",
        tolerations=[{"operator": "Exists"}],
        nodeSelector={"kubernetes.io/hostname": "cordoned"},
    )
    assert (await scheduled(cluster, "anything"))["spec"]["nodeName"] == "cordoned"


async def test_deleted_pods_hold_capacity_until_gone_then_pending_pods_schedule(make_cluster):
    cluster = make_cluster()
    cluster.start(Scheduler)
    on_a100 = {"kubernetes.io/hostname": "gpu-a100-0"}
    cluster.create_pod("holder", gpus(3), nodeSelector=on_a100)
    await scheduled(cluster, "holder")
    cluster.set_phase("holder", "Running")
    cluster.create_pod("waiter", gpus(2), nodeSelector=on_a100)
    first = await unschedulable(cluster, "waiter")
    assert first.startswith(
        "0/3 nodes are available: 1 Insufficient nvidia.com/gpu, 2 node(s) didn't match"
    )

    cluster.store.delete(cluster.res("", "pods"), "default", "holder")  # graceful: still running
    assert cluster.pod("holder")["metadata"]["deletionTimestamp"]
    cluster.store.create(
        cluster.res("", "nodes"),
        {
            "metadata": {"name": "late"},
            "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "10"}},
        },
    )  # a change that retries pending pods
    await wait_for(
        lambda: len(cluster.events("waiter", "FailedScheduling")) == 2, timeout=5
    )  # one per message
    failure = await unschedulable(cluster, "waiter")
    assert failure.startswith(
        "0/4 nodes are available: 1 Insufficient nvidia.com/gpu, 3 node(s) didn't match"
    )

    cluster.finish_deletion("holder")
    waiter = await scheduled(cluster, "waiter")
    assert waiter["spec"]["nodeName"] == "gpu-a100-0"
    assert devices_of(waiter) == {"nvidia.com/gpu": ["0", "1"]}


async def test_a_finished_pod_frees_its_gpus(make_cluster):
    cluster = make_cluster()
    cluster.start(Scheduler)
    on_a100 = {"kubernetes.io/hostname": "gpu-a100-0"}
    cluster.create_pod("done", gpus(4), nodeSelector=on_a100)
    await scheduled(cluster, "done")
    cluster.create_pod("next", gpus(4), nodeSelector=on_a100)
    await unschedulable(cluster, "next")
    cluster.set_phase("done", "Succeeded")
    assert devices_of(await scheduled(cluster, "next")) == {"nvidia.com/gpu": ["0", "1", "2", "3"]}


async def test_retries_do_not_repeat_the_event(make_cluster):
    cluster = make_cluster()
    (scheduler,) = cluster.start(Scheduler)
    cluster.create_pod("huge", gpus(16))
    message = await unschedulable(cluster, "huge")
    for i in range(5):
        cluster.create_pod(f"small-{i}")
        await scheduled(cluster, f"small-{i}")
        cluster.set_phase(f"small-{i}", "Succeeded")  # frees capacity: every pending pod is retried
    await wait_for(lambda: not scheduler._queue.qsize(), timeout=5)
    (event,) = cluster.events("huge", "FailedScheduling")
    assert event["message"] == message and event["count"] == 1


async def test_scheduling_gates_hold_a_pod_until_removed(make_cluster):
    cluster = make_cluster()
    cluster.start(Scheduler)
    cluster.create_pod("gated", schedulingGates=[{"name": "kueue.x-k8s.io/admission"}])

    def gated():
        conds = {c["type"]: c for c in cluster.pod("gated")["status"].get("conditions", [])}
        return (
            conds.get("PodScheduled", {}).get("reason") == "SchedulingGated"
            and conds["PodScheduled"]
        )

    condition = await wait_for(gated, timeout=5, message="SchedulingGated")
    assert condition["status"] == "False"
    assert not cluster.pod("gated")["spec"].get("nodeName") and not cluster.events("gated")
    cluster.store.mutate(
        cluster.res("", "pods"), "default", "gated", lambda p: p["spec"].pop("schedulingGates")
    )
    await scheduled(cluster, "gated")


async def test_pods_for_other_schedulers_are_left_alone(make_cluster):
    cluster = make_cluster()
    (scheduler,) = cluster.start(Scheduler)
    cluster.create_pod("volcano", schedulerName="volcano")
    cluster.create_pod("default")
    await scheduled(cluster, "default")
    await wait_for(lambda: not scheduler._queue.qsize(), timeout=5)
    assert not cluster.pod("volcano")["spec"].get("nodeName")
    assert not cluster.pod("volcano")["status"].get("conditions")


async def test_no_nodes(make_cluster):
    cluster = make_cluster({"nodes": [{"name": "only", "capacity": {"cpu": 1, "memory": "1Gi"}}]})
    cluster.store.delete(cluster.res("", "nodes"), None, "only")
    cluster.start(Scheduler)
    cluster.create_pod("alone")
    assert await unschedulable(cluster, "alone") == "no nodes available to schedule pods"


MIXED = {
    "nodes": [
        {
            "name": "mixed",
            "capacity": {
                "cpu": 8,
                "memory": "32Gi",
                "nvidia.com/gpu": 2,
                "nvidia.com/mig-1g.10gb": 2,
                "huawei.com/Ascend910": 1,
            },
            "devices": {"nvidia.com/mig-1g.10gb": {"ids": ["2:7", "2:8"]}},
        },
        {
            "name": "amd",
            "capacity": {"cpu": 8, "memory": "32Gi", "amd.com/gpu": 2},
            "devices": {"amd.com/gpu": {"env": "HIP_VISIBLE_DEVICES"}},
        },
    ]
}


async def test_device_ids_and_variables_per_vendor_and_cluster_file(make_cluster):
    cluster = make_cluster(MIXED)
    cluster.start(Scheduler)
    nodes = {n: cluster.store.get(cluster.res("", "nodes"), None, n) for n in ("mixed", "amd")}
    limits = {"nvidia.com/gpu": "1", "nvidia.com/mig-1g.10gb": "1", "huawei.com/Ascend910": "1"}
    cluster.create_pod(
        "many", [{"name": "main", "image": "busybox:1.36", "resources": {"limits": limits}}]
    )
    many = await scheduled(cluster, "many")
    assert devices_of(many) == {
        "huawei.com/Ascend910": ["0"],
        "nvidia.com/gpu": ["0"],
        "nvidia.com/mig-1g.10gb": ["2:7"],
    }
    assert device_env_for_pod(many, nodes["mixed"]) == {
        "ASCEND_VISIBLE_DEVICES": "0",
        "NVIDIA_VISIBLE_DEVICES": "0,MIG-2:7",
    }
    cluster.create_pod(
        "rocm",
        [{"name": "main", "image": "busybox:1.36", "resources": {"limits": {"amd.com/gpu": "2"}}}],
    )
    rocm = await scheduled(cluster, "rocm")
    assert device_env_for_pod(rocm, nodes["amd"]) == {"HIP_VISIBLE_DEVICES": "0,1"}
    cluster.create_pod("plain", nodeSelector={"kubernetes.io/hostname": "mixed"})
    plain = await scheduled(cluster, "plain")
    assert DEVICES_ANNOTATION not in (plain["metadata"].get("annotations") or {})
    assert device_env_for_pod(plain, nodes["mixed"]) == {}
