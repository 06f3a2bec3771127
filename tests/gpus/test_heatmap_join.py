"""Device slots and the heatmap join on whole, time-sliced and MIG nodes, over real WatchCache
objects fed with the Node and Pod dicts an API server sends (no cluster needed)."""

import json

import pytest

from crater_hub.accelerators import Accelerator
from crater_hub.gpus.devices import DeviceIndex, build_node, gpu_equivalent
from crater_hub.gpus.heatmap import FilterError, Heatmap, parse_filters, visible_rows
from crater_hub.gpus.utilization import DeviceSample, UtilizationSnapshot
from crater_hub.kube.caches import WatchCache

DEV = "localkube.crater.io/devices"
GiB = 1024**3


def node(name, allocatable, labels=None, layout=None):
    meta = {"name": name, "labels": labels or {}, "resourceVersion": "1"}
    if layout:
        meta["annotations"] = {DEV: json.dumps(layout)}
    return {"metadata": meta, "status": {"allocatable": {"cpu": "32", **allocatable}}}


def pod(name, node_name, resources, devices=None, labels=None, annotations=None, ns="jhub",
        phase="Running"):
    annotations = dict(annotations or {})
    if devices is not None:
        annotations[DEV] = json.dumps(devices)
    return {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}",
                         "labels": labels or {}, "annotations": annotations, "resourceVersion": "1"},
            "spec": {"nodeName": node_name,
                     "containers": [{"name": "c", "resources": {"limits": resources}}]},
            "status": {"phase": phase}}


def server(name, user, node_name, resources, devices=None, server_name=""):
    ann = {"hub.jupyter.org/username": user}
    if server_name:
        ann["hub.jupyter.org/servername"] = server_name
    return pod(name, node_name, resources, devices,
               labels={"component": "singleuser-server", "hub.jupyter.org/username": user},
               annotations=ann)


def job(name, owner, job_id, node_name, resources, devices=None):
    return pod(name, node_name, resources, devices,
               labels={"app.kubernetes.io/managed-by": "crater-hub", "crater.io/kind": "job",
                       "crater.io/job-id": str(job_id), "crater.io/owner": owner},
               annotations={"crater.io/owner-name": owner})


WHOLE = node("gpu-a", {"nvidia.com/gpu": "4"},
             {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"})
SLICED = node("t4-1", {"nvidia.com/gpu": "8"},
              {"nvidia.com/gpu.product": "Tesla-T4", "nvidia.com/gpu.replicas": "4",
               "nvidia.com/gpu.count": "2", "nvidia.com/gpu.sharing-strategy": "time-slicing"})
MIG = node("mig-1", {"nvidia.com/mig-1g.10gb": "4", "nvidia.com/mig-3g.40gb": "1"},
           {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/mig.strategy": "mixed"},
           layout={"nvidia.com/mig-1g.10gb": {"ids": ["0:1", "0:2", "0:3", "0:4"]},
                   "nvidia.com/mig-3g.40gb": {"ids": ["1:1"]}})

ACCS = [Accelerator("a100", "A100 80GB", "nvidia.com/gpu",
                    {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}),
        Accelerator("t4", "T4", "nvidia.com/gpu", {"nvidia.com/gpu.product": "Tesla-T4"}),
        Accelerator("a100-1g", "A100 1g.10gb", "nvidia.com/mig-1g.10gb"),
        Accelerator("a100-3g", "A100 3g.40gb", "nvidia.com/mig-3g.40gb")]


def sample(node_name, gpu, util, holders=(), instance=None, used=GiB):
    return DeviceSample(node=node_name, gpu=gpu, instance=instance, uuid=f"GPU-{node_name}-{gpu}",
                        model="A100", mig_profile=None, utilization=util, memory_used=used,
                        memory_total=80 * GiB, holders=tuple(holders))


def snap(*samples, error=None, at=1000.0):
    return UtilizationSnapshot(at, {(s.node, s.gpu, s.instance): s for s in samples}, error)


def index(nodes, pods):
    nc, pc = WatchCache("nodes", api=object()), WatchCache("pods", api=object())
    for n in nodes:
        nc.apply("ADDED", n)
    for p in pods:
        pc.apply("ADDED", p)
    return DeviceIndex(node_cache=nc, pod_cache=pc), nc, pc


def test_whole_gpus_one_slot_each_with_their_holders():
    nd = build_node(WHOLE, [server("jupyter-ann", "ann", "gpu-a", {"nvidia.com/gpu": "2"}, {"nvidia.com/gpu": ["1", "3"]}),
                            pod("done", "gpu-a", {"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": ["0"]},
                                phase="Succeeded")])
    assert [(s.gpu, s.holders) for s in nd.slots] == [
        ("0", ()), ("1", (("jhub", "jupyter-ann"),)), ("2", ()), ("3", (("jhub", "jupyter-ann"),))]
    assert gpu_equivalent(WHOLE, "nvidia.com/gpu") == 1


def test_time_sliced_replicas_share_their_physical_gpu():
    pods = [server("jupyter-ann", "ann", "t4-1", {"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": ["0::0"]}),
            job("crater-job-7-x", "bob", 7, "t4-1", {"nvidia.com/gpu": "2"}, {"nvidia.com/gpu": ["0::1", "1::0"]})]
    nd = build_node(SLICED, pods)
    assert [(s.gpu, s.replicas, s.holders) for s in nd.slots] == [
        ("0", 4, (("jhub", "crater-job-7-x"), ("jhub", "jupyter-ann"))),
        ("1", 4, (("jhub", "crater-job-7-x"),))]
    assert gpu_equivalent(SLICED, "nvidia.com/gpu") == 0.25


def test_mig_instances_are_cells_of_their_parent_gpu():
    pods = [job("crater-job-9-x", "ann", 9, "mig-1", {"nvidia.com/mig-1g.10gb": "1"},
                {"nvidia.com/mig-1g.10gb": ["0:2"]})]
    nd = build_node(MIG, pods)
    assert [(s.gpu, s.instance, s.profile, bool(s.holders)) for s in nd.slots] == [
        ("0", "1", "1g.10gb", False), ("0", "2", "1g.10gb", True), ("0", "3", "1g.10gb", False),
        ("0", "4", "1g.10gb", False), ("1", "1", "3g.40gb", False)]
    assert gpu_equivalent(MIG, "nvidia.com/mig-1g.10gb") == pytest.approx(1 / 7)
    assert gpu_equivalent(MIG, "nvidia.com/mig-3g.40gb") == pytest.approx(3 / 7)


def test_join_names_owner_and_workload_and_marks_idle_after_the_window():
    pods = [server("jupyter-ann", "ann", "gpu-a", {"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": ["0"]},
                   server_name="big"),
            job("crater-job-7-x", "bob", 7, "gpu-a", {"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": ["1"]})]
    idx, _, _ = index([WHOLE], pods)
    now = [1000.0]
    hm = Heatmap(idx, lambda: ACCS, threshold=0.05, window=60, clock=lambda: now[0])
    first = snap(sample("gpu-a", "0", 0.0), sample("gpu-a", "1", 0.93), sample("gpu-a", "2", 0.0))
    rows = {r["gpu"]: r for r in hm.rows(first)}
    assert rows["0"]["accelerator"] == "a100"
    assert rows["0"]["holders"][0] | {} == {
        "namespace": "jhub", "pod": "jupyter-ann", "placement": "device", "kind": "server",
        "user": "ann", "workload": "big", "link": "/user/ann/big/"}
    assert rows["1"]["holders"][0]["link"] == "/hub/crater/jobs/7"
    assert rows["1"]["utilization"] == 0.93
    assert not rows["0"]["idle"]  # low, but not yet for the window
    assert not rows["2"]["idle"]  # free GPUs are never "allocated but idle"
    now[0] = 1070.0
    rows = {r["gpu"]: r for r in hm.rows(snap(sample("gpu-a", "0", 0.01), sample("gpu-a", "1", 0.9),
                                              at=1070.0))}
    assert rows["0"]["idle"] and not rows["1"]["idle"]
    [summary] = hm.summary(snap(at=1070.0))
    assert summary["slug"] == "a100"


def test_without_prometheus_allocation_stays_and_nothing_is_idle():
    pods = [server("jupyter-ann", "ann", "gpu-a", {"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": ["0"]})]
    idx, _, _ = index([WHOLE], pods)
    hm = Heatmap(idx, lambda: ACCS, window=0)
    rows = hm.rows(snap(error="Prometheus at http://x unreachable: refused"))
    assert rows[0]["holders"][0]["user"] == "ann"
    assert rows[0]["utilization"] is None and not rows[0]["idle"]


def test_pods_without_device_ids_are_placed_by_dcgm_labels_else_by_count():
    pods = [server("jupyter-ann", "ann", "gpu-a", {"nvidia.com/gpu": "1"}),
            job("crater-job-7-x", "bob", 7, "gpu-a", {"nvidia.com/gpu": "2"})]
    idx, _, _ = index([WHOLE], pods)
    hm = Heatmap(idx, lambda: ACCS)
    rows = {r["gpu"]: r for r in hm.rows(snap(sample("gpu-a", "3", 0.5, holders=[("jhub", "jupyter-ann")])))}
    assert [(h["pod"], h["placement"]) for h in rows["3"]["holders"]] == [("jupyter-ann", "dcgm")]
    counted = [g for g in "012" if rows[g]["holders"]]
    assert len(counted) == 2 and all(rows[g]["holders"][0]["placement"] == "count" for g in counted)


def test_index_follows_cache_events_and_memoizes():
    idx, nc, pc = index([WHOLE, SLICED], [])
    hm = Heatmap(idx, lambda: ACCS)
    s = snap()
    assert not any(r["holders"] for r in hm.rows(s))
    joins = hm.joins
    hm.rows(s)
    assert hm.joins == joins  # nothing changed: no new join
    pc.apply("ADDED", server("jupyter-ann", "ann", "t4-1", {"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": ["1::2"]}))
    rows = hm.rows(s)
    assert [r["gpu"] for r in rows if r["holders"]] == ["1"]
    pc.apply("DELETED", server("jupyter-ann", "ann", "t4-1", {"nvidia.com/gpu": "1"}))
    assert not any(r["holders"] for r in hm.rows(s))
    nc.apply("DELETED", SLICED)
    assert {r["node"] for r in hm.rows(s)} == {"gpu-a"}


def test_filters_and_pages():
    pods = [server("jupyter-ann", "ann", "gpu-a", {"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": ["0"]})]
    idx, _, _ = index([WHOLE, SLICED, MIG], pods)
    hm = Heatmap(idx, lambda: ACCS, window=0)
    s = snap(sample("gpu-a", "0", 0.0))
    models = [a.model() for a in ACCS]
    rows, total = hm.page(s, parse_filters({}, models))
    assert total == 4 and len(rows) == 4 + 2 + 5  # (a100, t4, 1g, 3g) node rows
    rows, total = hm.page(s, parse_filters({"idle": "true"}, models))
    assert total == 1 and [(r["node"], r["gpu"]) for r in rows] == [("gpu-a", "0")]
    rows, total = hm.page(s, parse_filters({"accelerator": "t4", "node": "T4"}, models))
    assert total == 1 and {r["node"] for r in rows} == {"t4-1"}
    rows, total = hm.page(s, parse_filters({"limit": "1", "offset": "1"}, models))
    assert total == 4 and {r["accelerator"] for r in rows} == {"t4"}
    for args, field in (({"accelerator": "h100"}, "accelerator"), ({"idle": "maybe"}, "idle"),
                        ({"limit": "0"}, "limit"), ({"offset": "-1"}, "offset"),
                        ({"node": "a/b"}, "node")):
        with pytest.raises(FilterError) as e:
            parse_filters(args, models)
        assert e.value.field == field and field in str(e.value)


def test_owner_visibility_you_or_other_user():
    pods = [server("jupyter-ann", "ann", "gpu-a", {"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": ["0"]}),
            job("crater-job-7-x", "bob", 7, "gpu-a", {"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": ["1"]})]
    idx, _, _ = index([WHOLE], pods)
    rows = Heatmap(idx, lambda: ACCS).rows(snap())
    seen = {r["gpu"]: r["holders"] for r in visible_rows(rows, "ann", show_names=False) if r["holders"]}
    assert seen["0"][0]["owner"] == "you" and seen["0"][0]["workload"] == ""
    assert seen["1"][0] == {"placement": "device", "kind": "job", "owner": "other user", "user": None,
                            "workload": None, "link": None, "namespace": None, "pod": None}
    assert rows[1]["holders"][0]["user"] == "bob"  # the memoized rows are untouched
