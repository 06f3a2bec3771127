"""DCGM series → device samples (the label variants found in the field) and the shared cache
(one query per interval for all callers; never raises; says why when there is no data).

The series below are what Prometheus answers for the exporter's text format: a vanilla
dcgm-exporter scraped directly, one behind a ServiceMonitor (``exported_*``), a newer build
(``hostname``), and MIG instances (``GPU_I_ID``/``GPU_I_PROFILE``, GPU_UTIL 0).
"""

import asyncio
import socket

import pytest
from traitlets import TraitError
from traitlets.config import Config

from crater_hub.config import Crater
from crater_hub.gpus.prometheus import Prometheus, PrometheusError, shared_prometheus
from crater_hub.gpus.utilization import (
    NOT_CONFIGURED,
    SNAPSHOT_QUERY,
    UtilizationCache,
    samples_from_series,
)

MIB = 1024 * 1024


def series(name, value, **labels):
    return {"metric": {"__name__": name, **labels}, "value": float(value), "ts": 1.0}


def device(name, value, node="n1", gpu="0", **labels):
    return series(name, value, Hostname=node, gpu=gpu, UUID=f"GPU-{node}-{gpu}",
                  device=f"nvidia{gpu}", modelName="NVIDIA A100-SXM4-80GB", **labels)


def test_whole_gpu_with_pod_labels():
    samples = samples_from_series([
        device("DCGM_FI_DEV_GPU_UTIL", 87, pod="jupyter-ann", namespace="hub", container="notebook"),
        device("DCGM_FI_DEV_FB_USED", 1024, pod="jupyter-ann", namespace="hub", container="notebook"),
        device("DCGM_FI_DEV_FB_FREE", 3072, pod="jupyter-ann", namespace="hub", container="notebook"),
        device("DCGM_FI_DEV_GPU_UTIL", 0, gpu="1"),
    ])
    s = samples[("n1", "0", None)]
    assert s.utilization == pytest.approx(0.87)
    assert (s.memory_used, s.memory_total) == (1024 * MIB, 4096 * MIB)
    assert s.holders == (("hub", "jupyter-ann"),)
    assert (s.uuid, s.model, s.instance, s.mig_profile) == ("GPU-n1-0", "NVIDIA A100-SXM4-80GB", None, None)
    free = samples[("n1", "1", None)]
    assert free.utilization == 0 and free.holders == ()


def test_lowercase_hostname_and_exported_labels_win_over_the_exporters_own_pod():
    samples = samples_from_series([
        series("DCGM_FI_DEV_GPU_UTIL", 40, hostname="n2", gpu="3", UUID="GPU-x", modelName="T4",
               pod="dcgm-exporter-abcde", namespace="gpu-operator",
               exported_pod="job-7-xyz", exported_namespace="jobs"),
    ])
    assert list(samples) == [("n2", "3", None)]
    assert samples[("n2", "3", None)].holders == (("jobs", "job-7-xyz"),)


def test_old_namespace_labels_of_older_exporters():
    samples = samples_from_series([
        device("DCGM_FI_DEV_GPU_UTIL", 5, pod_name="old-style", pod_namespace="lab", container_name="c"),
    ])
    assert samples[("n1", "0", None)].holders == (("lab", "old-style"),)


def test_mig_instances_use_engine_active_where_gpu_util_is_zero():
    mig = {"GPU_I_PROFILE": "1g.10gb"}
    samples = samples_from_series([
        device("DCGM_FI_DEV_GPU_UTIL", 0, GPU_I_ID="1", **mig, pod="a", namespace="u"),
        device("DCGM_FI_PROF_GR_ENGINE_ACTIVE", 0.62, GPU_I_ID="1", **mig, pod="a", namespace="u"),
        device("DCGM_FI_PROF_GR_ENGINE_ACTIVE", 0.05, GPU_I_ID="2", **mig),
        # no GPU_UTIL at all (profiling-only exporter config)
        device("DCGM_FI_PROF_GR_ENGINE_ACTIVE", 0.3, gpu="1", GPU_I_ID="7", GPU_I_PROFILE="3g.40gb"),
    ])
    one = samples[("n1", "0", "1")]
    assert one.utilization == pytest.approx(0.62)
    assert (one.instance, one.mig_profile, one.holders) == ("1", "1g.10gb", (("u", "a"),))
    assert samples[("n1", "0", "2")].utilization == pytest.approx(0.05)
    assert samples[("n1", "1", "7")].mig_profile == "3g.40gb"


def test_gpu_util_wins_when_it_reads_above_zero():
    samples = samples_from_series([
        device("DCGM_FI_DEV_GPU_UTIL", 50),
        device("DCGM_FI_PROF_GR_ENGINE_ACTIVE", 0.2),
    ])
    assert samples[("n1", "0", None)].utilization == pytest.approx(0.5)


def test_time_sliced_gpu_repeated_per_pod_collects_every_holder():
    samples = samples_from_series([
        device("DCGM_FI_DEV_GPU_UTIL", 30, pod="a", namespace="u"),
        device("DCGM_FI_DEV_GPU_UTIL", 30, pod="b", namespace="u"),
    ])
    assert samples[("n1", "0", None)].holders == (("u", "a"), ("u", "b"))


def test_series_that_are_not_devices_are_skipped():
    samples = samples_from_series([
        series("DCGM_FI_DEV_GPU_UTIL", 10, gpu="0"),  # no node label
        series("up", 1, Hostname="n1", gpu="0"),
        device("DCGM_FI_DEV_GPU_UTIL", float("nan")),
    ])
    assert list(samples) == [("n1", "0", None)]
    assert samples[("n1", "0", None)].utilization == 0


def test_dcgm_labels_override_and_validation():
    crater = Crater(config=Config({"Crater": {"dcgm_labels": {"node": "kubernetes_node"}}}))
    cache = UtilizationCache.shared(crater)
    samples = samples_from_series(
        [series("DCGM_FI_DEV_GPU_UTIL", 10, kubernetes_node="k1", Hostname="exporter-pod", gpu="0")],
        cache.labels,
    )
    assert list(samples) == [("k1", "0", None)]
    with pytest.raises(TraitError, match=r"dcgm_labels has unknown key 'nodes'.*allowed: node"):
        Crater(config=Config({"Crater": {"dcgm_labels": {"nodes": "x"}}}))
    with pytest.raises(TraitError, match=r"dcgm_labels.pod must be a label name"):
        Crater(config=Config({"Crater": {"dcgm_labels": {"pod": 3}}}))
    with pytest.raises(TraitError, match=r"prometheus_url must be an http"):
        Crater(config=Config({"Crater": {"prometheus_url": "prom:9090"}}))


class ScriptedPrometheus(Prometheus):
    """A Prometheus whose answers the test releases by hand; counts the queries it gets."""

    def __init__(self):
        super().__init__("http://scripted.invalid")
        self.calls = []
        self.release = asyncio.Event()
        self.answer = []

    async def query(self, promql, at=None):
        self.calls.append(promql)
        await self.release.wait()
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def until_asked(prom):
    """Let the event loop run until the cache has put its query (a few steps, bounded)."""
    for _ in range(100):
        if prom.calls:
            return
        await asyncio.sleep(0)
    raise AssertionError("the cache never queried Prometheus")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


async def test_concurrent_callers_share_one_query_per_interval():
    prom, clock = ScriptedPrometheus(), Clock()
    prom.answer = [device("DCGM_FI_DEV_GPU_UTIL", 90)]
    cache = UtilizationCache(prom, interval=5, clock=clock)
    waiting = [asyncio.ensure_future(cache.snapshot()) for _ in range(50)]
    await until_asked(prom)
    for _ in range(10):
        await asyncio.sleep(0)  # every caller is waiting now
    assert prom.calls == [SNAPSHOT_QUERY]
    prom.release.set()
    snaps = await asyncio.gather(*waiting)
    assert all(s is snaps[0] for s in snaps)
    assert snaps[0].error is None
    assert snaps[0].get("n1", 0).utilization == pytest.approx(0.9)
    clock.now += 4.9
    assert (await cache.snapshot()) is snaps[0] and len(prom.calls) == 1
    clock.now += 0.2
    prom.answer = [device("DCGM_FI_DEV_GPU_UTIL", 10)]
    fresh = await cache.snapshot()
    assert len(prom.calls) == 2 and fresh.get("n1", "0").utilization == pytest.approx(0.1)


async def test_a_cancelled_caller_does_not_cancel_the_others():
    prom = ScriptedPrometheus()
    cache = UtilizationCache(prom, interval=5)
    first, second = asyncio.ensure_future(cache.snapshot()), asyncio.ensure_future(cache.snapshot())
    await until_asked(prom)
    first.cancel()
    prom.release.set()
    assert (await second).error is None


async def test_a_failing_prometheus_gives_an_error_snapshot_kept_for_the_interval():
    prom, clock = ScriptedPrometheus(), Clock()
    prom.answer = PrometheusError("Prometheus at http://p unreachable: boom")
    prom.release.set()
    cache = UtilizationCache(prom, interval=5, clock=clock)
    snap = await cache.snapshot()
    assert snap.samples == {} and snap.error == "Prometheus at http://p unreachable: boom"
    await cache.snapshot()
    assert len(prom.calls) == 1
    prom.answer = RuntimeError("a bug")
    clock.now += 6
    assert "RuntimeError('a bug')" in (await cache.snapshot()).error


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_unreachable_prometheus_is_named_in_the_error():
    url = f"http://127.0.0.1:{free_port()}"
    crater = Crater(config=Config({"Crater": {"prometheus_url": url, "prometheus_scrape_interval": 5}}))
    cache = UtilizationCache.shared(crater)
    assert cache is UtilizationCache.shared(crater) and cache.interval == 5
    snap = await cache.snapshot()
    assert snap.error.startswith(f"Prometheus at {url} unreachable")
    with pytest.raises(PrometheusError, match="unreachable"):
        await shared_prometheus(crater).query("up")


async def test_not_configured():
    crater = Crater(config=Config())
    assert shared_prometheus(crater) is None
    snap = await UtilizationCache.shared(crater).snapshot()
    assert (snap.samples, snap.error) == ({}, NOT_CONFIGURED)
