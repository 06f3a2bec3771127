"""The cluster inventory and its watch caches, against a real localkube over HTTP."""

import asyncio
import json
import random
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config

from crater_hub.accelerators import Accelerator
from crater_hub.kube.caches import WatchCache, stop_shared_caches
from crater_hub.kube.inventory import Inventory, pod_requests
from crater_hub.localkube import LocalKube
from tests.helpers import wait_for

A100 = "a100-sxm4-80gb"
ON_A100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}


@pytest.fixture
async def kube(tmp_path):
    """``await kube(**LocalKube kwargs)``: a started localkube and a CoreV1Api on it."""
    started = []

    async def make(**kwargs):
        lk = LocalKube(state_dir=tmp_path / f"state{len(started)}", **kwargs)
        await lk.start()
        path = lk.write_kubeconfig(tmp_path / f"kubeconfig{len(started)}")
        cfg = client.Configuration()
        await config.load_kube_config(config_file=str(path), client_configuration=cfg)
        api = client.ApiClient(cfg)
        started.append((lk, api))
        return client.CoreV1Api(api)

    yield make
    for lk, api in started:
        await api.close()
        await lk.stop()


@pytest.fixture
async def caches():
    """``caches(core, **kwargs)``: Node and Pod caches on ``core``, stopped after the test."""
    made = []

    def make(core, **kwargs):
        nodes = WatchCache("nodes", api=core, **kwargs)
        pods = WatchCache("pods", api=core, **kwargs)
        made.extend([nodes, pods])
        return nodes, pods

    yield make
    for cache in made:
        await cache.stop()


async def inventory_on(core, caches, accelerators=None, **kwargs):
    nodes, pods = caches(core, **kwargs)
    inventory = Inventory(accelerators, node_cache=nodes, pod_cache=pods)
    await inventory.ready(timeout=10)
    return inventory


def accelerator(inventory, slug):
    (entry,) = [a for a in inventory.capacity()["accelerators"] if a["slug"] == slug]
    return entry


def pod(name, gpus=0, command=("sleep", "300"), node_selector=None, restart="Always", **resources):
    limits = {"nvidia.com/gpu": str(gpus)} if gpus else {}
    body = {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main", "image": "busybox:1.36", "command": list(command),
                "resources": {"limits": limits, "requests": resources},
            }],
        },
    }
    if node_selector:
        body["spec"]["nodeSelector"] = node_selector
    return body


async def free_on(inventory, slug, free, largest=None):
    def check():
        entry = accelerator(inventory, slug)
        ok = entry["free"] == free and (largest is None or entry["largest_free_block"] == largest)
        return ok and entry

    return await wait_for(check, timeout=10, message=f"{slug} free == {free}")


async def test_demo_cluster_capacity_and_discovered_accelerators(kube, caches):
    core = await kube()
    inventory = await inventory_on(core, caches)

    slugs = [a.slug for a in inventory.accelerators()]
    assert slugs == [A100, "t4"]
    a100 = inventory.accelerators()[0]
    assert a100.resource == "nvidia.com/gpu" and a100.node_selector == ON_A100
    assert a100.memory == "80Gi"

    snapshot = inventory.capacity()
    a100 = accelerator(inventory, A100)
    assert {k: a100[k] for k in ("total", "allocatable", "in_use", "free", "largest_free_block")} == {
        "total": 4, "allocatable": 4, "in_use": 0, "free": 4, "largest_free_block": 4}
    assert a100["nodes"] == [{"name": "gpu-a100-0", "allocatable": 4, "in_use": 0, "free": 4}]
    t4 = accelerator(inventory, "t4")
    assert (t4["total"], t4["free"], t4["largest_free_block"]) == (8, 8, 8)

    nodes = {n["name"]: n for n in snapshot["nodes"]}
    assert sorted(nodes) == ["cpu-0", "gpu-a100-0", "gpu-t4-0"]
    assert nodes["cpu-0"]["accelerators"] == {}
    assert nodes["gpu-a100-0"]["ready"] and nodes["gpu-a100-0"]["schedulable"]
    assert nodes["gpu-a100-0"]["cpu"]["allocatable"] == "64"
    assert nodes["gpu-a100-0"]["memory"]["allocatable"] == "512Gi"
    assert nodes["gpu-t4-0"]["accelerators"] == {"t4": {"allocatable": 8, "in_use": 0, "free": 8}}
    assert snapshot["updated"].endswith("Z")
    # memoized: nothing changed, the same object comes back
    assert inventory.capacity() is snapshot


async def test_gpu_pod_takes_and_gives_back_devices(kube, caches):
    core = await kube()
    inventory = await inventory_on(core, caches)

    await core.create_namespaced_pod("default", pod("train", gpus=2, node_selector=ON_A100))
    a100 = await free_on(inventory, A100, 2, largest=2)
    assert a100["in_use"] == 2 and a100["total"] == 4
    assert a100["nodes"] == [{"name": "gpu-a100-0", "allocatable": 4, "in_use": 2, "free": 2}]
    fit = inventory.fits(A100, 2)
    assert fit.fits_now and fit.fits_when_empty
    fits_now, fits_when_empty, largest = inventory.fits(A100, 3)
    assert (fits_now, fits_when_empty, largest) == (False, True, 2)
    assert "2 of 4 free" in inventory.fits(A100, 3).message
    assert accelerator(inventory, "t4")["free"] == 8

    await core.delete_namespaced_pod("train", "default")
    await free_on(inventory, A100, 4, largest=4)


async def test_fits_refuses_more_than_any_node_holds(kube, caches):
    core = await kube()
    inventory = await inventory_on(core, caches)
    fit = inventory.fits("t4", 9)
    assert not fit.fits_now and not fit.fits_when_empty
    assert "largest NVIDIA Tesla T4 node has 8" in fit.message
    with pytest.raises(ValueError, match="known: a100-sxm4-80gb, t4"):
        inventory.fits("h100", 1)


async def test_cpu_pods_and_finished_pods_hold_no_gpus(kube, caches):
    core = await kube()
    inventory = await inventory_on(core, caches)
    await core.create_namespaced_pod("default", pod("cpu-only", cpu="2", memory="1Gi"))

    def cpu_pod_counted():
        return any(n["cpu"]["requested"] == "2" for n in inventory.capacity()["nodes"])

    await wait_for(cpu_pod_counted, timeout=10, message="the CPU pod's request counted")
    assert accelerator(inventory, A100)["free"] == 4
    assert accelerator(inventory, "t4")["free"] == 8

    await core.create_namespaced_pod("default", pod(
        "short", gpus=3, command=("sleep", "1"), node_selector=ON_A100, restart="Never"))
    await free_on(inventory, A100, 1)  # held while it runs
    await wait_for(lambda: inventory.pod_cache.get("short", "default")["status"]["phase"]
                   == "Succeeded", timeout=10, message="the short pod Succeeded")
    await free_on(inventory, A100, 4)  # a finished pod holds nothing, though it still exists


async def test_unschedulable_node_counts_in_total_not_in_free(kube, caches):
    core = await kube()
    inventory = await inventory_on(core, caches)
    await core.patch_node("gpu-t4-0", {"spec": {"unschedulable": True}})
    t4 = await free_on(inventory, "t4", 0, largest=0)
    assert (t4["total"], t4["allocatable"]) == (8, 8)
    fit = inventory.fits("t4", 1)
    assert not fit.fits_now and fit.fits_when_empty


async def test_configured_accelerators(kube, caches):
    core = await kube()
    configured = [
        Accelerator("any-gpu", "Any NVIDIA GPU", "nvidia.com/gpu"),
        Accelerator("a100", "A100", "nvidia.com/gpu", node_selector=ON_A100),
    ]
    inventory = await inventory_on(core, caches, configured)
    assert [a.slug for a in inventory.accelerators()] == ["any-gpu", "a100"]
    assert accelerator(inventory, "any-gpu")["total"] == 12
    assert accelerator(inventory, "any-gpu")["largest_free_block"] == 8
    assert accelerator(inventory, "a100")["total"] == 4


async def test_watch_resumes_after_the_server_ends_it(kube, caches):
    core = await kube()
    inventory = await inventory_on(core, caches, timeout_seconds=1)
    pods = inventory.pod_cache
    await wait_for(lambda: pods.stats["watches"] >= 3, timeout=10, message="watch restarted")
    await core.create_namespaced_pod("default", pod("late", gpus=1, node_selector=ON_A100))
    await free_on(inventory, A100, 3)
    assert pods.stats["lists"] == 1 and pods.stats["gone"] == 0 and pods.stats["errors"] == 0


async def test_relist_after_410_reports_what_vanished(kube, caches):
    core = await kube(history_size=5)
    inventory = await inventory_on(core, caches)
    pods = inventory.pod_cache
    for name in ("keep", "drop"):
        await core.create_namespaced_pod("default", pod(name, gpus=1, node_selector=ON_A100))
    await free_on(inventory, A100, 2)
    assert pods.get("drop", "default") is not None

    seen = []
    pods.add_listener(lambda event_type, obj, old: seen.append((event_type, obj["metadata"]["name"])))
    await pods.stop()
    old_version = pods.resource_version
    await core.delete_namespaced_pod("drop", "default", grace_period_seconds=0)
    for i in range(6):  # more changes than the server's history holds
        await core.create_namespaced_pod("default", pod(f"cpu-{i}"))
    # (the server's history is global and tiny: the first phase may have relisted already)
    gone, lists = pods.stats["gone"], pods.stats["lists"]
    pods.start()  # resumes from old_version: 410 Gone, relist, diff

    await wait_for(lambda: pods.stats["gone"] > gone and pods.stats["lists"] > lists, timeout=10,
                   message="relisted after 410")
    assert pods.resource_version != old_version
    await free_on(inventory, A100, 3)
    assert pods.get("drop", "default") is None
    assert ("DELETED", "drop") in seen
    assert {f"cpu-{i}" for i in range(6)} <= {name for t, name in seen if t == "ADDED"}
    assert ("ADDED", "keep") not in seen
    assert pods.stats["errors"] == 0


async def test_cache_retries_with_backoff_when_the_api_is_down(kube, caches):
    core = await kube()
    nodes, _ = caches(core, initial_delay=0.05, max_delay=0.2)
    await nodes.ready(timeout=10)
    assert len(nodes) == 3 and nodes.get("gpu-a100-0")["metadata"]["name"] == "gpu-a100-0"

    broken = WatchCache("nodes", api=client.CoreV1Api(client.ApiClient(
        client.Configuration(host="http://127.0.0.1:9"))), initial_delay=0.05, max_delay=0.2)
    broken.start()
    try:
        await wait_for(lambda: broken.stats["errors"] >= 3, timeout=10, message="retried")
        assert not broken.connected and len(broken) == 0
    finally:
        await broken.stop()
        await broken._api.api_client.close()


def test_pod_requests_like_the_scheduler():
    spec = {
        "containers": [
            {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                           "limits": {"nvidia.com/gpu": "2", "cpu": "4"}}},
            {"resources": {"requests": {"cpu": "0.5"}}},
        ],
        "initContainers": [
            {"resources": {"requests": {"cpu": "3", "nvidia.com/gpu": "1"}}},
            {"restartPolicy": "Always", "resources": {"requests": {"memory": "512Mi"}}},
        ],
        "overhead": {"cpu": "100m"},
    }
    assert pod_requests({"spec": spec}) == {
        "cpu": 3100,  # max(0.5 + 0.5, 3) + overhead, in millicores
        "memory": 1536 * 2**20,  # 1Gi + the sidecar
        "nvidia.com/gpu": 2,  # the limit, as no request was given; more than the init's 1
    }


async def test_shared_cache_is_one_per_loop_and_kind(kube):
    core = await kube()
    first = WatchCache.shared("nodes", api=core)
    try:
        assert WatchCache.shared("nodes") is first
        assert WatchCache.shared("nodes", label_selector="a=b", api=core) is not first
        await asyncio.wait_for(first.first_load, 10)
    finally:
        await stop_shared_caches()
    assert not [key for key in WatchCache._shared if key[0] is asyncio.get_running_loop()]


def node(name, gpus=4, ready=True, unschedulable=False, heartbeat="t0", rv="1"):
    return {
        "metadata": {"name": name, "resourceVersion": rv,
                     "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
        "spec": {"unschedulable": True} if unschedulable else {},
        "status": {
            "capacity": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": str(gpus)},
            "allocatable": {"cpu": "7500m", "memory": "60Gi", "nvidia.com/gpu": str(gpus)},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                            "lastHeartbeatTime": heartbeat}],
        },
    }


def bound(name, node_name, gpus, phase="Running", rv="1"):
    return {
        "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv},
        "spec": {"nodeName": node_name, "containers": [
            {"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]},
        "status": {"phase": phase},
    }


def fed():
    """An inventory on unstarted caches, fed through the caches' event path (no API)."""
    nodes, pods = WatchCache("nodes"), WatchCache("pods")
    return Inventory(None, node_cache=nodes, pod_cache=pods), nodes, pods


def test_not_ready_nodes_count_in_total_not_free_and_heartbeats_change_nothing():
    inventory, nodes, pods = fed()
    nodes.apply("ADDED", node("a"))
    nodes.apply("ADDED", node("b", gpus=8))
    pods.apply("ADDED", bound("p", "b", 3))
    (h100,) = inventory.capacity()["accelerators"]
    assert h100["slug"] == "h100-80gb-hbm3"
    assert (h100["total"], h100["free"], h100["largest_free_block"]) == (12, 9, 5)

    snapshot = inventory.capacity()
    nodes.apply("MODIFIED", node("a", heartbeat="t1", rv="2"))
    pods.apply("MODIFIED", {**bound("p", "b", 3, rv="2"), "status": {"phase": "Running",
                                                                    "podIP": "10.0.0.1"}})
    assert inventory.capacity() is snapshot  # nothing that capacity reports changed

    summary, text = inventory.capacity(detail=False), inventory.capacity_json()
    assert summary["accelerators"] == [{k: v for k, v in h100.items() if k != "nodes"}]
    assert json.loads(text) == snapshot

    nodes.apply("MODIFIED", node("b", gpus=8, ready=False, rv="3"))
    assert inventory.capacity(detail=False)["accelerators"][0]["free"] == 4
    assert json.loads(inventory.capacity_json())["accelerators"][0]["free"] == 4
    (h100,) = inventory.capacity()["accelerators"]
    assert (h100["total"], h100["in_use"], h100["free"], h100["largest_free_block"]) == (12, 3, 4, 4)
    assert inventory.fits("h100-80gb-hbm3", 5) == inventory.fits("h100-80gb-hbm3", 5)
    fit = inventory.fits("h100-80gb-hbm3", 5)
    assert (fit.fits_now, fit.fits_when_empty, fit.largest_node) == (False, True, 8)
    b = [n for n in inventory.capacity()["nodes"] if n["name"] == "b"][0]
    assert b["ready"] is False and b["cpu"] == {"allocatable": "7500m", "requested": "0"}
    assert b["accelerators"] == {"h100-80gb-hbm3": {"allocatable": 8, "in_use": 3, "free": 0}}


def test_relist_diff_deletes_vanished_objects_and_rediscovers():
    inventory, nodes, pods = fed()
    nodes.apply("ADDED", node("a"))
    pods.apply("ADDED", bound("p", "a", 1))
    pods.apply("ADDED", bound("q", "a", 2))
    assert inventory.capacity()["accelerators"][0]["free"] == 1

    seen = []
    pods.add_listener(lambda t, obj, old: seen.append((t, obj["metadata"]["name"])))
    pods.replace([bound("q", "a", 2), bound("r", "a", 1, rv="5")], "9")
    assert sorted(seen) == [("ADDED", "r"), ("DELETED", "p")]  # q unchanged: no event
    assert inventory.capacity()["accelerators"][0]["free"] == 1
    assert pods.resource_version == "9"

    nodes.replace([], "10")  # every node gone: nothing to discover
    assert inventory.accelerators() == [] and inventory.capacity()["accelerators"] == []


@pytest.mark.parametrize("seed", range(5))
def test_incremental_capacity_equals_capacity_from_scratch(seed):
    """Random node and pod events, read in between: always what a fresh inventory computes."""
    rng = random.Random(seed)
    inventory, nodes, pods = fed()
    products = ["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "NVIDIA-L4"]
    for step in range(600):
        roll = rng.random()
        name = f"n{rng.randrange(12)}"
        if roll < 0.2:
            body = node(name, gpus=rng.choice((0, 2, 4, 8)), ready=rng.random() > 0.2,
                        unschedulable=rng.random() < 0.2, rv=str(step))
            body["metadata"]["labels"]["nvidia.com/gpu.product"] = rng.choice(products)
            body["metadata"]["labels"]["zone"] = rng.choice("ab")
            nodes.apply("MODIFIED" if nodes.get(name) else "ADDED", body)
        elif roll < 0.25 and nodes.get(name):
            nodes.apply("DELETED", nodes.get(name))
        elif roll < 0.8:
            phase = rng.choice(("Running", "Running", "Pending", "Succeeded", "Failed"))
            pods.apply("ADDED", bound(f"p{rng.randrange(60)}", name, rng.randrange(4), phase,
                                      rv=str(step)))
        elif pods.objects:
            pods.apply("DELETED", rng.choice(list(pods.objects.values())))
        if step % 7 == 0:
            fresh, fresh_nodes, fresh_pods = fed()
            fresh_nodes.replace(list(nodes.objects.values()), "1")
            fresh_pods.replace(list(pods.objects.values()), "1")
            ours, theirs = inventory.capacity(), fresh.capacity()
            assert ours["accelerators"] == theirs["accelerators"], step
            assert ours["nodes"] == theirs["nodes"], step


SHARED_CLUSTER = Path(__file__).parents[1] / "data" / "clusters" / "mig-and-timesliced.yaml"


async def test_time_sliced_and_mig_capacity_on_the_shared_gpu_cluster(kube, caches):
    """Time-sliced T4s count as physical × replicas under their own (-SHARED) model; each MIG
    profile is an accelerator of its own beside the node's unpartitioned A100."""
    core = await kube(cluster_file=SHARED_CLUSTER)
    inventory = await inventory_on(core, caches)
    by_slug = {a.slug: a for a in inventory.accelerators()}
    assert sorted(by_slug) == ["a100-sxm4-80gb", "a100-sxm4-80gb-mig-1g-10gb",
                               "a100-sxm4-80gb-mig-3g-40gb", "t4-shared", "v100-sxm2-16gb"]
    mig = by_slug["a100-sxm4-80gb-mig-1g-10gb"]
    assert (mig.resource, mig.display_name, mig.memory) == (
        "nvidia.com/mig-1g.10gb", "NVIDIA A100 SXM4 80GB MIG 1g.10gb", "9728Mi")
    assert mig.node_selector == {"nvidia.com/mig-1g.10gb.product": "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb"}
    counts = {a["slug"]: (a["total"], a["free"], a["largest_free_block"])
              for a in inventory.capacity()["accelerators"]}
    assert counts == {
        "a100-sxm4-80gb": (1, 1, 1),  # GPU 1 of the MIG node, not partitioned
        "a100-sxm4-80gb-mig-1g-10gb": (4, 4, 4),
        "a100-sxm4-80gb-mig-3g-40gb": (1, 1, 1),
        "t4-shared": (8, 8, 8),  # 2 physical × 4 replicas
        "v100-sxm2-16gb": (2, 2, 2),
    }
    nodes = {n["name"]: n["accelerators"] for n in inventory.capacity()["nodes"]}
    assert sorted(nodes["gpu-a100-mig-0"]) == ["a100-sxm4-80gb", "a100-sxm4-80gb-mig-1g-10gb",
                                               "a100-sxm4-80gb-mig-3g-40gb"]

    body = pod("slice", node_selector=mig.node_selector)
    body["spec"]["containers"][0]["resources"]["limits"] = {"nvidia.com/mig-1g.10gb": "3"}
    await core.create_namespaced_pod("default", body)
    await core.create_namespaced_pod("default", pod("share", gpus=3, node_selector=by_slug["t4-shared"].node_selector))
    await free_on(inventory, "a100-sxm4-80gb-mig-1g-10gb", 1, largest=1)
    shared = await free_on(inventory, "t4-shared", 5, largest=5)
    assert shared["in_use"] == 3
    assert accelerator(inventory, "a100-sxm4-80gb")["free"] == 1
    assert not inventory.fits("a100-sxm4-80gb-mig-1g-10gb", 2).fits_now
