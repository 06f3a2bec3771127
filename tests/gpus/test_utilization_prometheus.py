"""Utilization end to end: localkube's DCGM exporters → a real Prometheus → the hub's cache.

Pods really run: a busy loop must read high through ``UtilizationCache.snapshot()``, a sleeping
pod ~0, a pinned pod its pin, a MIG instance its pin through GR_ENGINE_ACTIVE with its instance
and profile; and with Prometheus stopped the snapshot says so instead of raising.
"""

import time

import pytest

from crater_hub.gpus.prometheus import PrometheusError
from crater_hub.gpus.utilization import UtilizationCache, pod_average_utilization, pod_utilization
from tests.helpers import wait_for

from .pods import PIN, gpu_pod

MIB = 1024 * 1024


async def all_running(core, names):
    async def check():
        pods = (await core.list_namespaced_pod("default")).items
        return {p.metadata.name for p in pods if p.status.phase == "Running"} >= set(names)
    await wait_for(check, timeout=30, message=f"{names} running")


def held_by(snapshot, pod):
    found = [s for s in snapshot.samples.values() if ("default", pod) in s.holders]
    return found[0] if len(found) == 1 else None


async def test_busy_idle_pinned_and_mig_devices_read_through_the_shared_cache(gpu_cluster, prometheus):
    lk, core = gpu_cluster
    await core.create_namespaced_pod("default", gpu_pod("busy", "gpu-v100-0", command=("sh", "-c", "while :; do :; done")))
    await core.create_namespaced_pod("default", gpu_pod("idle", "gpu-v100-0"))
    await core.create_namespaced_pod("default", gpu_pod("shared", "gpu-t4-ts-0", pin="0.9"))
    await core.create_namespaced_pod("default", gpu_pod("slice", "gpu-a100-mig-0", "nvidia.com/mig-1g.10gb", pin="0.4"))
    await all_running(core, ["busy", "idle", "shared", "slice"])
    prometheus.scrape_localkube(lk)
    started = time.time()
    cache = UtilizationCache(prometheus.client, interval=prometheus.scrape_interval)

    async def settled():
        snap = await cache.snapshot()
        busy, idle = held_by(snap, "busy"), held_by(snap, "idle")
        # a busy loop burns a core; >= 50 % even when the machine's other work takes its share
        ok = (busy and busy.utilization >= 0.5 and idle and held_by(snap, "shared")
              and held_by(snap, "slice"))
        return snap if ok else None
    snap = await wait_for(settled, timeout=45, interval=0.5, message="the busy loop's GPU reads >= 50 % in Prometheus")

    assert snap.error is None
    busy, idle = held_by(snap, "busy"), held_by(snap, "idle")
    assert (busy.node, busy.gpu, busy.instance, busy.model) == ("gpu-v100-0", "0", None, "Tesla-V100-SXM2-16GB")
    assert busy.memory_total == 16384 * MIB and busy.uuid.startswith("GPU-")
    assert (idle.gpu, idle.utilization) == ("1", pytest.approx(0, abs=0.05))
    assert 0 < idle.memory_used < 200 * MIB  # a sleeping process's resident memory
    shared = held_by(snap, "shared")
    assert (shared.node, shared.gpu, shared.model) == ("gpu-t4-ts-0", "0", "NVIDIA Tesla-T4")
    assert shared.utilization == pytest.approx(0.9)
    mig = held_by(snap, "slice")
    assert (mig.node, mig.gpu, mig.instance, mig.mig_profile) == ("gpu-a100-mig-0", "0", "11", "1g.10gb")
    assert mig.utilization == pytest.approx(0.4)  # GPU_UTIL is 0 on MIG: GR_ENGINE_ACTIVE counts
    assert mig.memory_total == 9728 * MIB
    # every device is there, held or not: MIG instances 2, 11-14 and GPU 1; 2 T4s; 2 V100s
    assert sorted(snap.samples) == sorted(
        [("gpu-a100-mig-0", "0", gi) for gi in ("2", "11", "12", "13", "14")]
        + [("gpu-a100-mig-0", "1", None), ("gpu-t4-ts-0", "0", None), ("gpu-t4-ts-0", "1", None),
           ("gpu-v100-0", "0", None), ("gpu-v100-0", "1", None)])
    assert snap.samples[("gpu-t4-ts-0", "1", None)].holders == ()
    assert (await cache.snapshot()) is snap or cache.queries >= 1  # cached within the interval

    # over time, per pod (query_range): the pins, the MIG one through GR_ENGINE_ACTIVE
    end = time.time()
    points = await pod_utilization(prometheus.client, "default", "shared", started, end, 1)
    assert points and all(v == pytest.approx(0.9) for _, v in points)
    assert await pod_average_utilization(prometheus.client, "default", "slice", started, end) == pytest.approx(0.4)

    async def busy_average():  # its samples since `started` reach Prometheus scrape by scrape
        value = await pod_average_utilization(prometheus.client, "default", "busy", started, time.time())
        return value if value is not None and value > 0.1 else None
    await wait_for(busy_average, timeout=20, interval=1, message="the busy pod's mean utilization > 10 %")
    assert await pod_average_utilization(prometheus.client, "default", "idle", started, end) < 0.05
    assert await pod_utilization(prometheus.client, "default", "nobody", started, end, 1) == []
    assert await pod_average_utilization(prometheus.client, "default", "nobody", started, end) is None

    # a new pin comes through at the next scrape
    await core.patch_namespaced_pod("shared", "default", {"metadata": {"annotations": {PIN: "0.15"}}})

    async def repinned():
        s = held_by(await cache.snapshot(), "shared")
        return s and s.utilization == pytest.approx(0.15)
    await wait_for(repinned, timeout=15, interval=0.5, message="the new pin in the snapshot")


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


async def test_with_prometheus_stopped_the_snapshot_says_why_and_nothing_raises(prometheus):
    clock = Clock()
    cache = UtilizationCache(prometheus.client, interval=5, clock=clock)
    first = await cache.snapshot()
    assert first.error is None and first.samples == {}
    await prometheus.stop()
    clock.now += 5
    snap = await cache.snapshot()
    assert snap.samples == {}
    assert snap.error.startswith(f"Prometheus at {prometheus.url} unreachable")
    with pytest.raises(PrometheusError, match="unreachable"):
        await pod_average_utilization(prometheus.client, "default", "x", time.time() - 60, time.time())
