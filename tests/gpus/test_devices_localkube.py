"""Device slots of the MIG and time-sliced test cluster (tests/data/clusters/mig-and-timesliced.yaml),
with the devices localkube's real scheduler hands out: MIG instances are cells of their parent GPU,
time-sliced replicas share their physical GPU, and each slot names the pods holding it."""

from pathlib import Path

import pytest
import yaml

from crater_hub.gpus.devices import DeviceIndex, gpu_equivalent
from crater_hub.gpus.heatmap import Heatmap
from crater_hub.kube.caches import WatchCache
from crater_hub.kube.inventory import Inventory
from crater_hub.localkube.scheduler import Scheduler
from tests.helpers import wait_for
from tests.localkube.conftest import make_cluster  # noqa: F401 (fixture)

CLUSTER = Path(__file__).parents[1] / "data" / "clusters" / "mig-and-timesliced.yaml"


def limits(resources):
    return [{"name": "main", "image": "busybox:1.36", "resources": {"limits": resources}}]


async def bound(cluster, name):
    return await wait_for(lambda: (cluster.pod(name) or {}).get("spec", {}).get("nodeName")
                          and cluster.pod(name), timeout=10, message=f"{name} to be bound")


def caches_of(cluster):
    nc, pc = WatchCache("nodes", api=object()), WatchCache("pods", api=object())
    for node in cluster.store.list(cluster.res("", "nodes"))[0]:
        nc.apply("ADDED", node)
    for pod in cluster.store.list(cluster.res("", "pods"))[0]:
        pc.apply("ADDED", pod)
    return nc, pc


async def test_mig_time_sliced_and_whole_gpus_as_slots(make_cluster):  # noqa: F811
    cluster = make_cluster(yaml.safe_load(CLUSTER.read_text()))
    cluster.start(Scheduler)
    cluster.create_pod("mig-a", limits({"nvidia.com/mig-1g.10gb": "2"}))
    cluster.create_pod("mig-b", limits({"nvidia.com/mig-3g.40gb": "1"}))
    cluster.create_pod("whole", limits({"nvidia.com/gpu": "1"}),
                       nodeSelector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"})
    for k in range(3):
        cluster.create_pod(f"ts-{k}", limits({"nvidia.com/gpu": "1"}),
                           nodeSelector={"nvidia.com/gpu.product": "NVIDIA-Tesla-T4-SHARED"})
    for name in ("mig-a", "mig-b", "whole", "ts-0", "ts-1", "ts-2"):
        await bound(cluster, name)

    nc, pc = caches_of(cluster)
    index = DeviceIndex(node_cache=nc, pod_cache=pc)
    mig = index.node("gpu-a100-mig-0")
    cells = [(s.resource, s.gpu, s.instance, [p for _, p in s.holders]) for s in mig.slots]
    # GPU 0 is split into five instances (cells of one parent), GPU 1 is whole
    assert cells == [
        ("nvidia.com/gpu", "1", None, ["whole"]),
        ("nvidia.com/mig-1g.10gb", "0", "11", ["mig-a"]),
        ("nvidia.com/mig-1g.10gb", "0", "12", ["mig-a"]),
        ("nvidia.com/mig-1g.10gb", "0", "13", []),
        ("nvidia.com/mig-1g.10gb", "0", "14", []),
        ("nvidia.com/mig-3g.40gb", "0", "2", ["mig-b"]),
    ]
    node = nc.get("gpu-a100-mig-0")
    assert gpu_equivalent(node, "nvidia.com/mig-1g.10gb") == pytest.approx(1 / 7)
    assert gpu_equivalent(node, "nvidia.com/mig-3g.40gb") == pytest.approx(3 / 7)
    assert gpu_equivalent(node, "nvidia.com/gpu") == 1

    t4 = index.node("gpu-t4-ts-0")
    # 2 physical T4s × 4 replicas: two slots, the three pods spread over them (replica ids g::r)
    assert [(s.gpu, s.replicas) for s in t4.slots] == [("0", 4), ("1", 4)]
    assert sorted(p for s in t4.slots for _, p in s.holders) == ["ts-0", "ts-1", "ts-2"]
    assert gpu_equivalent(nc.get("gpu-t4-ts-0"), "nvidia.com/gpu") == 0.25

    # the heatmap groups them under the inventory's accelerators, and counts GPU equivalents
    inventory = Inventory(None, node_cache=nc, pod_cache=pc)
    heatmap = Heatmap(index, inventory.accelerators)
    summary = {s["slug"]: s for s in heatmap.summary(None)}
    by_resource = {}
    for row in heatmap.rows(None):
        by_resource.setdefault((row["node"], row["resource"]), set()).add(row["accelerator"])
    assert len(by_resource[("gpu-a100-mig-0", "nvidia.com/mig-1g.10gb")]) == 1
    mig_1g = next(iter(by_resource[("gpu-a100-mig-0", "nvidia.com/mig-1g.10gb")]))
    assert mig_1g != "nvidia.com/mig-1g.10gb", "MIG instances belong to a catalog accelerator"
    assert summary[mig_1g]["allocated_gpus"] == pytest.approx(2 / 7)
    t4_slug = next(iter(by_resource[("gpu-t4-ts-0", "nvidia.com/gpu")]))
    assert summary[t4_slug]["devices"] == 2 and summary[t4_slug]["allocated_gpus"] == 0.75
