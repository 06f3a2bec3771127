"""What every GPU is doing now, from DCGM exporter series in Prometheus, shared by all viewers.

The heatmap, the node load view and /hub/metrics all ask "how busy is each device"; asking
Prometheus once per viewer per refresh would multiply with the audience. :class:`UtilizationCache`
asks once per scrape interval (nothing newer can exist before the next scrape), and callers that
arrive while that query is in flight await the same answer. It never raises: a snapshot carries
``error`` — "utilization is not configured", or why Prometheus did not answer — so pages can show
allocation and a note instead of failing.

The DCGM exporter's series and labels as found in the field (see NVIDIA/dcgm-exporter):

- ``DCGM_FI_DEV_GPU_UTIL`` (0–100 %), ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` (0–1 ratio; the only
  utilization on MIG instances, where GPU_UTIL reads 0), ``DCGM_FI_DEV_FB_USED`` and
  ``DCGM_FI_DEV_FB_FREE`` (MiB);
- ``gpu``, ``UUID``, ``device`` ("nvidia0"), ``modelName``, ``Hostname`` (``hostname`` on newer
  builds), MIG ``GPU_I_ID`` and ``GPU_I_PROFILE``;
- with the exporter's Kubernetes mapping, ``pod``, ``namespace``, ``container`` of the pod a
  device is assigned to — renamed ``exported_pod`` etc. when a ServiceMonitor scrapes without
  ``honorLabels`` (then ``pod`` is the exporter's own pod: the ``exported_`` name wins).

Label names can be overridden per key with ``Crater.dcgm_labels`` (:data:`DEFAULT_LABELS` keys).
"""

import asyncio
import math
import time
from dataclasses import dataclass

from ..config import DCGM_LABEL_DEFAULTS as DEFAULT_LABELS
from ..config import dcgm_label_names as label_names
from .prometheus import PrometheusError, shared_prometheus

UTIL = "DCGM_FI_DEV_GPU_UTIL"
ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
FB_USED = "DCGM_FI_DEV_FB_USED"
FB_FREE = "DCGM_FI_DEV_FB_FREE"
METRICS = (UTIL, ENGINE_ACTIVE, FB_USED, FB_FREE)
MIB = 1024 * 1024

NOT_CONFIGURED = "utilization is not configured"

@dataclass(frozen=True)
class DeviceSample:
    """One device (a GPU, or a MIG instance within one) as the exporter last reported it."""

    node: str
    gpu: str
    instance: str | None  # MIG GPU_I_ID, else None
    uuid: str
    model: str
    mig_profile: str | None
    utilization: float  # 0..1 (GR_ENGINE_ACTIVE where GPU_UTIL is absent or 0)
    memory_used: int  # bytes
    memory_total: int  # bytes
    holders: tuple  # ((namespace, pod), ...), sorted


@dataclass(frozen=True)
class UtilizationSnapshot:
    """All devices at one moment; ``error`` says why there are none when that is the case."""

    taken_at: float  # unix time
    samples: dict  # {(node, gpu, instance): DeviceSample}
    error: str | None  # None, NOT_CONFIGURED, or why Prometheus failed

    def get(self, node, gpu, instance=None):
        return self.samples.get((node, str(gpu), None if instance is None else str(instance)))


def _first(metric, names):
    for name in names:
        value = metric.get(name)
        if value:
            return value
    return None


def _finite(value):
    return value if value is not None and math.isfinite(value) else None


def samples_from_series(series, labels=None):
    """Group instant-vector entries (``Prometheus.query`` answers, any of :data:`METRICS`) into
    ``{(node, gpu, instance): DeviceSample}``.

    A device appears as several series when several pods hold it (time-slicing: the exporter
    repeats the series per pod) or when two scrapes see it: values are merged (the highest
    reading), holders collected. Series without a node or gpu label are not devices and are
    skipped.
    """
    labels = labels or DEFAULT_LABELS
    node_l, gpu_l, inst_l = labels["node"], labels["gpu"], labels["instance"]
    pod_l, ns_l = labels["pod"], labels["namespace"]
    static = (("uuid", labels["uuid"]), ("model", labels["model"]), ("profile", labels["profile"]))
    wanted = set(METRICS)
    devices = {}
    for entry in series:  # ~160,000 entries at 40,000 GPUs: kept to plain lookups
        metric = entry["metric"]
        name = metric.get("__name__")
        if name not in wanted:
            continue
        node, gpu = _first(metric, node_l), _first(metric, gpu_l)
        if node is None or gpu is None:
            continue
        key = (node, gpu, _first(metric, inst_l))
        d = devices.get(key)
        if d is None:
            d = devices[key] = {"holders": set(), "values": {}}
            for field, names in static:
                found = _first(metric, names)
                if found:
                    d[field] = found
        pod = _first(metric, pod_l)
        if pod:
            d["holders"].add((_first(metric, ns_l) or "", pod))
        value = entry.get("value")
        if value is not None and math.isfinite(value):
            values = d["values"]
            values[name] = max(value, values.get(name, value))
    out = {}
    for (node, gpu, instance), d in devices.items():
        v = d["values"]
        util = v.get(UTIL, 0.0) / 100
        if not util and ENGINE_ACTIVE in v:
            util = v[ENGINE_ACTIVE]
        used = int(v.get(FB_USED, 0) * MIB)
        out[(node, gpu, instance)] = DeviceSample(
            node=node,
            gpu=gpu,
            instance=instance,
            uuid=d.get("uuid", ""),
            model=d.get("model", ""),
            mig_profile=d.get("profile"),
            utilization=min(max(util, 0.0), 1.0),
            memory_used=used,
            memory_total=used + int(v.get(FB_FREE, 0) * MIB),
            holders=tuple(sorted(d["holders"])),
        )
    return out


def snapshot_query(labels=None):
    """One query for every device's four series: one HTTP round trip per refresh. ``max by``
    the labels read here only: the answer leaves out the rest (``job``, ``instance``,
    ``pci_bus_id``, the driver version...), about a third of its size, and a device scraped
    twice comes once."""
    names = sorted({n for names in (labels or DEFAULT_LABELS).values() for n in names})
    return f'max by (__name__, {", ".join(names)}) ({{__name__=~"{"|".join(METRICS)}"}})'


SNAPSHOT_QUERY = snapshot_query()


class UtilizationCache:
    """The latest :class:`UtilizationSnapshot`, refreshed at most once per ``interval`` seconds.

    ``prom`` None means Prometheus is not configured: every snapshot says so. A failed query is
    kept for the interval too, so a Prometheus that is down is not asked once per viewer.
    """

    def __init__(self, prom, interval=15.0, labels=None, clock=time.monotonic):
        self.prom = prom
        self.interval = float(interval)
        self.labels = labels or DEFAULT_LABELS
        self.clock = clock
        self.query = snapshot_query(self.labels)
        self.queries = 0  # Prometheus queries made, for tests and benchmarks
        self._latest = None
        self._latest_at = -math.inf
        self._inflight = None

    @classmethod
    def shared(cls, crater):
        """The hub's one cache, on ``Crater.prometheus_url`` and ``prometheus_scrape_interval``."""
        prom = shared_prometheus(crater)
        key = (id(prom), crater.prometheus_scrape_interval, repr(crater.dcgm_labels))
        cached = crater.__dict__.get("_crater_utilization_cache")
        if cached is None or cached[0] != key:
            cache = cls(prom, crater.prometheus_scrape_interval, label_names(crater.dcgm_labels))
            cached = crater.__dict__["_crater_utilization_cache"] = (key, cache)
        return cached[1]

    async def snapshot(self):
        """The current snapshot; queries Prometheus only when the last one is older than the
        interval, and only once for all callers waiting meanwhile. Never raises."""
        if self.prom is None:
            return UtilizationSnapshot(time.time(), {}, NOT_CONFIGURED)
        if self._latest is not None and self.clock() - self._latest_at < self.interval:
            return self._latest
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._refresh())
        # shield: one caller going away (a closed request) must not cancel the others' answer
        return await asyncio.shield(self._inflight)

    async def _refresh(self):
        started = self.clock()
        try:
            self.queries += 1
            try:
                series = await self.prom.query(self.query)
                if len(series) > 2000:  # seconds of work at 40,000 GPUs: off the event loop
                    samples = await asyncio.to_thread(samples_from_series, series, self.labels)
                else:
                    samples = samples_from_series(series, self.labels)
                snap = UtilizationSnapshot(time.time(), samples, None)
            except PrometheusError as e:
                snap = UtilizationSnapshot(time.time(), {}, str(e))
            except Exception as e:  # a bug here must not break every GPU page
                snap = UtilizationSnapshot(time.time(), {}, f"utilization unavailable: {e!r}")
            self._latest, self._latest_at = snap, started
            return snap
        finally:
            self._inflight = None


def _pod_expr(namespace, pod):
    """PromQL: each of the pod's devices' utilization 0..1, GR_ENGINE_ACTIVE where GPU_UTIL is
    0 or absent, matched on pod/namespace or their exported_ variants."""

    def q(value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    sel = [f"{{pod={q(pod)},namespace={q(namespace)}}}",
           f"{{exported_pod={q(pod)},exported_namespace={q(namespace)}}}"]

    def either(metric, suffix):
        return " or ".join(f"({metric}{s}{suffix})" for s in sel)

    # "* 1" and "/ 100" drop __name__, so `or` matches the same device across the metrics
    return (f"(({either(UTIL, ' / 100')}) > 0) or ({either(ENGINE_ACTIVE, ' * 1')})"
            f" or ({either(UTIL, ' / 100')})")


async def pod_utilization(prom, namespace, pod, start, end, step):
    """The pod's GPU utilization over time, ``[(ts, 0..1)]``: the mean over its devices at each
    step. Raises :class:`PrometheusError`; empty when the pod held no device then."""
    result = await prom.query_range(f"avg({_pod_expr(namespace, pod)})", start, end, step)
    if not result:
        return []
    return [(ts, min(max(v, 0.0), 1.0)) for ts, v in result[0]["values"] if math.isfinite(v)]


async def pod_average_utilization(prom, namespace, pod, start, end):
    """The pod's mean GPU utilization (0..1) from ``start`` to ``end``, or None when Prometheus
    has no sample of it then. One instant query (a subquery at ``end``, at most ~10,000 steps),
    whatever the length of the interval. Raises :class:`PrometheusError`.

    Prometheus puts a subquery's steps on multiples of its resolution in absolute time, the
    last at or before the query's time: asked at ``end`` itself, a sample in ``end``'s last
    fraction of a second falls after every step, and a pod with only that sample reads None.
    So the query is at ``end`` rounded up to a whole step."""
    resolution = max(1, math.ceil((end - start) / 10000))
    at = math.ceil(end / resolution) * resolution
    duration = max(1, math.ceil(at - start))
    promql = f"avg_over_time((avg({_pod_expr(namespace, pod)}))[{duration}s:{resolution}s])"
    result = await prom.query(promql, at=at)
    values = [r["value"] for r in result if math.isfinite(r["value"])]
    return min(max(values[0], 0.0), 1.0) if values else None
