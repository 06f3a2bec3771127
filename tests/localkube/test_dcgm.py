"""Time-sliced and MIG devices, and each node's DCGM exporter, on a real localkube.

The exporter's text is read with prometheus_client's parser (what a scrape accepts), and the
numbers follow what the pods really do: a busy loop reads high, a sleeping pod 0, a pinned pod
its annotation.
"""

from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from crater_hub.localkube.devices import DEVICES_ANNOTATION, device_env_for_pod
from crater_hub.localkube.nodes import nodes_from_cluster_spec
from tests.helpers import wait_for
from tests.localkube_api import localkube_api

CLUSTER = Path(__file__).parents[1] / "data" / "clusters" / "mig-and-timesliced.yaml"
BUSY = ["sh", "-c", "while :; do :; done"]
IDLE = ["sleep", "300"]


@pytest.fixture
async def kube(tmp_path):
    """A started localkube on the MIG and time-sliced cluster, and a CoreV1Api on it."""
    async with localkube_api(CLUSTER, tmp_path / "state", tmp_path / "kubeconfig") as pair:
        yield pair


def gpu_pod(name, node, resource="nvidia.com/gpu", count=1, command=IDLE, annotations=None):
    return {
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "work", "image": "busybox:1.36", "command": command,
                            "resources": {"limits": {resource: str(count)}}}],
        },
    }


async def running(core, name):
    async def check():
        pod = await core.read_namespaced_pod(name, "default")
        return pod if pod.status.phase == "Running" else None
    pod = await wait_for(check, timeout=30, message=f"{name} running")
    return client.ApiClient().sanitize_for_serialization(pod)


async def scrape(lk, node):
    """``[(metric, labels, value)]`` of a node's exporter, parsed as Prometheus parses it."""
    r = await AsyncHTTPClient().fetch(f"{lk.url}/api/v1/nodes/{node}:9400/proxy/metrics")
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return [(s.name, s.labels, s.value)
            for family in text_string_to_metric_families(r.body.decode()) for s in family.samples]


def series(samples, metric, **labels):
    return [(lab, v) for name, lab, v in samples
            if name == metric and all(lab.get(k) == v for k, v in labels.items())]


def test_time_slicing_and_mig_are_checked_in_the_cluster_file():
    def entry(capacity, labels=None, devices=None):
        return {"nodes": [{"name": "n", "capacity": {"cpu": 4, "memory": "8Gi", **capacity},
                           "labels": labels or {}, "devices": devices or {}}]}

    with pytest.raises(ValueError, match=r"nvidia.com/gpu 6 is not a whole number of GPUs × 4 replicas"):
        nodes_from_cluster_spec(entry({"nvidia.com/gpu": 6}, {"nvidia.com/gpu.replicas": 4}))
    with pytest.raises(ValueError, match=r"gpu.count: 3 physical GPUs, but nvidia.com/gpu 8 / 4 replicas is 2"):
        nodes_from_cluster_spec(entry({"nvidia.com/gpu": 8},
                                      {"nvidia.com/gpu.replicas": 4, "nvidia.com/gpu.count": 3}))
    with pytest.raises(ValueError, match=r"devices.nvidia.com/mig-1g.10gb.ids: required for MIG"):
        nodes_from_cluster_spec(entry({"nvidia.com/mig-1g.10gb": 1}))
    with pytest.raises(ValueError, match=r"'MIG-a' is not <gpu>:<gi>"):
        nodes_from_cluster_spec(entry({"nvidia.com/mig-1g.10gb": 1},
                                      devices={"nvidia.com/mig-1g.10gb": {"ids": ["MIG-a"]}}))
    with pytest.raises(ValueError, match=r"0:1 is already an instance of nvidia.com/mig-1g.10gb"):
        nodes_from_cluster_spec(entry({"nvidia.com/mig-1g.10gb": 1, "nvidia.com/mig-2g.20gb": 1},
                                      devices={"nvidia.com/mig-1g.10gb": {"ids": ["0:1"]},
                                               "nvidia.com/mig-2g.20gb": {"ids": ["0:1"]}}))
    (node,) = nodes_from_cluster_spec(entry({"nvidia.com/gpu": 8}, {"nvidia.com/gpu.replicas": 4}))
    assert node["metadata"]["labels"]["nvidia.com/gpu.sharing-strategy"] == "time-slicing"
    spec = yaml.safe_load(CLUSTER.read_text())
    assert [n["metadata"]["name"] for n in nodes_from_cluster_spec(spec)] == [
        "gpu-a100-mig-0", "gpu-t4-ts-0", "gpu-v100-0", "cpu-0"]


async def test_replicas_spread_over_physical_gpus_and_mig_instances_name_their_parent(kube):
    lk, core = kube
    node = {n: (await core.read_node(n)).to_dict() for n in ("gpu-t4-ts-0", "gpu-a100-mig-0")}
    placed = []
    for i in range(3):
        await core.create_namespaced_pod("default", gpu_pod(f"ts{i}", "gpu-t4-ts-0"))
        placed.append(await running(core, f"ts{i}"))
    ids = [p["metadata"]["annotations"][DEVICES_ANNOTATION] for p in placed]
    assert ids == ['{"nvidia.com/gpu": ["0::0"]}', '{"nvidia.com/gpu": ["1::0"]}',
                   '{"nvidia.com/gpu": ["0::1"]}']
    t4 = lk.store.find(lk.registry.lookup("", "v1", "nodes"), "", "gpu-t4-ts-0")
    assert device_env_for_pod(placed[2], t4) == {"NVIDIA_VISIBLE_DEVICES": "0"}
    await core.create_namespaced_pod("default", gpu_pod("mig", "gpu-a100-mig-0", "nvidia.com/mig-3g.40gb"))
    mig = await running(core, "mig")
    assert mig["metadata"]["annotations"][DEVICES_ANNOTATION] == '{"nvidia.com/mig-3g.40gb": ["0:2"]}'
    exec_env = lk.store.find(lk.registry.lookup("", "v1", "nodes"), "", "gpu-a100-mig-0")
    assert device_env_for_pod(mig, exec_env) == {"NVIDIA_VISIBLE_DEVICES": "MIG-0:2"}
    assert node["gpu-t4-ts-0"]["status"]["allocatable"]["nvidia.com/gpu"] == "8"


async def test_exporter_follows_cpu_time_pins_and_carries_holder_and_mig_labels(kube):
    lk, core = kube
    await core.create_namespaced_pod("default", gpu_pod("busy", "gpu-v100-0", command=BUSY))
    await core.create_namespaced_pod("default", gpu_pod("idle", "gpu-v100-0"))
    await core.create_namespaced_pod("default", gpu_pod(
        "pinned", "gpu-a100-mig-0", "nvidia.com/mig-1g.10gb",
        annotations={"localkube.crater.io/gpu-utilization": "0.9"}))
    for name in ("busy", "idle", "pinned"):
        await running(core, name)

    async def v100_busy_reads_high():
        samples = await scrape(lk, "gpu-v100-0")
        (busy,) = series(samples, "DCGM_FI_DEV_GPU_UTIL", pod="busy")
        return samples if busy[1] >= 50 else None  # one core's loop; on a shared 2-core machine
    samples = await wait_for(v100_busy_reads_high, timeout=20, interval=0.5,
                             message="the busy loop's GPU reads >= 50 %")
    (busy_labels, _), = series(samples, "DCGM_FI_DEV_GPU_UTIL", pod="busy")
    assert busy_labels == {"gpu": "0", "UUID": busy_labels["UUID"], "device": "nvidia0",
                           "modelName": "Tesla-V100-SXM2-16GB", "Hostname": "gpu-v100-0",
                           "container": "work", "namespace": "default", "pod": "busy"}
    assert busy_labels["UUID"].startswith("GPU-")
    (_, idle), = series(samples, "DCGM_FI_DEV_GPU_UTIL", pod="idle")
    assert idle <= 5
    (_, used), = series(samples, "DCGM_FI_DEV_FB_USED", pod="idle")
    (_, free), = series(samples, "DCGM_FI_DEV_FB_FREE", pod="idle")
    assert used > 0 and used + free == 16384  # the sleeping pod's resident memory, in MiB

    mig = await scrape(lk, "gpu-a100-mig-0")
    (labels, util), = series(mig, "DCGM_FI_DEV_GPU_UTIL", pod="pinned")
    assert util == 0 and labels["GPU_I_PROFILE"] == "1g.10gb" and labels["GPU_I_ID"] == "11"
    assert labels["gpu"] == "0"
    (_, active), = series(mig, "DCGM_FI_PROF_GR_ENGINE_ACTIVE", pod="pinned")
    assert active == pytest.approx(0.9)
    (_, total_free), = series(mig, "DCGM_FI_DEV_FB_FREE", GPU_I_ID="12")
    assert total_free == 9728  # an unassigned instance: the whole of its memory free
    assert [lab["GPU_I_ID"] for lab, _ in series(mig, "DCGM_FI_DEV_GPU_UTIL") if "GPU_I_ID" in lab] == [
        "2", "11", "12", "13", "14"]
    assert [lab for lab, _ in series(mig, "DCGM_FI_DEV_GPU_UTIL", gpu="1")][0].get("GPU_I_ID") is None

    await core.patch_namespaced_pod("busy", "default", {
        "metadata": {"annotations": {"localkube.crater.io/gpu-utilization": "0.25"}}})
    samples = await scrape(lk, "gpu-v100-0")
    assert series(samples, "DCGM_FI_DEV_GPU_UTIL", pod="busy")[0][1] == 25


async def test_a_time_sliced_gpu_repeats_its_series_per_holder(kube):
    lk, core = kube
    for i in range(3):  # 0::0, 1::0, 0::1: two pods on physical GPU 0
        await core.create_namespaced_pod("default", gpu_pod(
            f"share{i}", "gpu-t4-ts-0", annotations={"localkube.crater.io/gpu-utilization": "0.3"}))
        await running(core, f"share{i}")
    samples = await scrape(lk, "gpu-t4-ts-0")
    gpu0 = series(samples, "DCGM_FI_DEV_GPU_UTIL", gpu="0")
    assert sorted(lab["pod"] for lab, _ in gpu0) == ["share0", "share2"]
    assert {v for _, v in gpu0} == {60}  # the two pods' load adds up on the shared GPU
    assert [(lab["pod"], v) for lab, v in series(samples, "DCGM_FI_DEV_GPU_UTIL", gpu="1")] == [("share1", 30)]


async def test_unknown_node_is_404(kube):
    lk, _ = kube
    with pytest.raises(HTTPClientError) as e:
        await AsyncHTTPClient().fetch(f"{lk.url}/api/v1/nodes/nope:9400/proxy/metrics")
    assert e.value.code == 404
