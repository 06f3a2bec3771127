"""GPU accounting: allocation intervals in the database, kept from the shared pod watch cache.

A pod bound to a node with device resources (``nvidia.com/gpu``, ``nvidia.com/mig-1g.10gb``, ...)
opens one interval per resource; it closes when the pod ends (phase Succeeded or Failed) or is
deleted. Times come from the pod (:mod:`.intervals`: container ``startedAt``/``finishedAt``,
else ``PodScheduled``), not from when the hub saw an event. Each interval freezes who and what it
was (:func:`crater_hub.gpus.workloads.classify`, the user's hub groups at open, accelerator, node,
the physical-GPU share of one unit) and, when it closes, its mean utilization from Prometheus.
Closing adds the interval's GPU-seconds, split per UTC day, to the daily rollups
(:mod:`crater_hub.db.usage_models`) in the same transaction, so reports never scan intervals.

**Reconcile on start.** Intervals left open in the database by a previous hub process are
checked against the pod cache once it has loaded: a pod still running keeps its interval open; a
pod that ended closes it at its containers' ``finishedAt``; a pod that is gone closes it at its
last utilization sample in Prometheus, else at this start, both marked ``end_estimated``. Pods
holding devices that have no interval yet (started, or even started and ended, while the hub was
down) get one.

**Never on the event loop.** Cache listeners only put events on a queue; one task takes them in
order, asks Prometheus (asynchronously) and writes through
:class:`crater_hub.db.session.Database` (its worker thread).
"""

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select

from ..accelerators import slugify
from ..db import migrate
from ..db.models import utcnow
from ..db.usage_models import (
    GpuInterval,
    GpuUsageDaily,
    GpuUsageDailyGroup,
    GpuUsageDailyTotal,
    GpuUsageMonthly,
)
from .intervals import ended_at, hold_of, split_by_day

log = logging.getLogger("crater_hub.gpus")

#: Prometheus answers at close wait at most this long (the close is written without them after)
PROMETHEUS_TIMEOUT = 10.0


def epoch(dt):
    return dt.replace(tzinfo=timezone.utc).timestamp()


def from_epoch(ts):
    return datetime.fromtimestamp(ts, timezone.utc).replace(tzinfo=None)


def accelerator_for(accelerators, node, resource):
    """The slug of the accelerator ``resource`` on ``node`` is (the operator's list or the
    discovered one), else one named after the resource (``mig-1g-10gb``)."""
    if node is not None:
        labels = node["metadata"].get("labels") or {}
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        for acc in accelerators:
            if acc.resource == resource and acc.matches(labels, allocatable):
                return acc.slug
    return slugify(resource.split("/", 1)[-1]) or resource


@dataclass
class Open:
    """An interval this process knows is open."""

    id: int
    start: datetime
    #: the start came from a container's startedAt (else PodScheduled: replaced once one starts)
    firm: bool


def rollup_amounts(interval):
    """``[(model, key, gpu_seconds, measured, busy)]`` a closed interval adds to the rollups:
    per UTC day, once for its user, once for each of its groups and once in total; and per
    calendar month for its user (one entry per day, summed into the month's row)."""
    gpus = interval.count * interval.gpu_equivalent
    util = interval.utilization
    out = []
    for day, seconds in split_by_day(interval.start, interval.end):
        amount = seconds * gpus
        measured = amount if util is not None else 0.0
        busy = amount * util if util is not None else 0.0
        out.append((GpuUsageDaily, (day, interval.user or "", interval.accelerator, interval.kind),
                    amount, measured, busy))
        out.append((GpuUsageMonthly, (day.replace(day=1), interval.user or "",
                                      interval.accelerator, interval.kind), amount, measured, busy))
        out.extend((GpuUsageDailyGroup, (day, group, interval.accelerator, interval.kind),
                    amount, measured, busy) for group in interval.groups or ())
        out.append((GpuUsageDailyTotal, (day, interval.accelerator, interval.kind),
                    amount, measured, busy))
    return out


def rollup_row(model, key):
    """A new, empty rollup row of ``model`` for ``key``."""
    if model is GpuUsageDailyTotal:
        day, accelerator, kind = key
        who = {}
    elif model is GpuUsageMonthly:
        month, user, accelerator, kind = key
        return model(month=month, user=user, accelerator=accelerator, kind=kind, gpu_seconds=0.0,
                     measured_seconds=0.0, busy_seconds=0.0)
    else:
        day, name, accelerator, kind = key
        who = {"user" if model is GpuUsageDaily else "group": name}
    return model(day=day, accelerator=accelerator, kind=kind, gpu_seconds=0.0,
                 measured_seconds=0.0, busy_seconds=0.0, **who)


def rollup_add(session, interval):
    """Add a closed interval's GPU-seconds to the rollups (:func:`rollup_amounts`)."""
    # summed per row first: the days of one month name the same monthly row, and a row added
    # but not flushed yet is not found by session.get
    sums = {}
    for model, key, amount, measured, busy in rollup_amounts(interval):
        total = sums.setdefault((model, key), [0.0, 0.0, 0.0])
        total[0] += amount
        total[1] += measured
        total[2] += busy
    for (model, key), (amount, measured, busy) in sums.items():
        row = session.get(model, key)
        if row is None:
            row = rollup_row(model, key)
            session.add(row)
        row.gpu_seconds += amount
        row.measured_seconds += measured
        row.busy_seconds += busy


def close_interval(session, interval_id, end, estimated, utilization):
    """Close an open interval (no-op when it is already closed) and roll it up; returns it."""
    interval = session.get(GpuInterval, interval_id)
    if interval is None or interval.end is not None:
        return interval
    interval.end = max(end, interval.start)
    interval.end_estimated = estimated
    interval.utilization = utilization
    session.flush()
    rollup_add(session, interval)
    return interval


class Accounting:
    """The interval tracker of one hub process (see the module docstring).

    ``db``: a :class:`~crater_hub.db.session.Database`; ``pod_cache``/``node_cache``: the shared
    :class:`~crater_hub.kube.caches.WatchCache` of pods (all namespaces) and nodes;
    ``accelerators``: ``() -> [Accelerator]``; ``groups_of``: ``user -> [group]`` (the hub's
    users); ``prometheus``: a :class:`~crater_hub.gpus.prometheus.Prometheus` or None;
    ``classify``/``device_requests``/``gpu_equivalent``: the room's pod and device readers
    (:mod:`.workloads`, :mod:`.devices`), passed in so tests can give plain functions.
    """

    def __init__(self, db, pod_cache, node_cache, *, accelerators, groups_of, prometheus,
                 classify, device_requests, gpu_equivalent, system_namespaces=(), clock=utcnow):
        self.db = db
        self.pod_cache = pod_cache
        self.node_cache = node_cache
        self.accelerators = accelerators
        self.groups_of = groups_of
        self.prometheus = prometheus
        self.classify = classify
        self.device_requests = device_requests
        self.gpu_equivalent = gpu_equivalent
        self.system_namespaces = tuple(system_namespaces)
        self.clock = clock
        self.open = {}  # (pod uid, resource) -> Open
        self.closed = set()  # pod uids whose intervals are all closed (while the pod is cached)
        self._events = asyncio.Queue()
        self._task = None
        self.started_at = None
        #: set after each processed event (tests and the report wait on it)
        self.idle = asyncio.Event()
        self.idle.set()

    # -- start and stop ------------------------------------------------------------------------

    async def start(self):
        """Migrate, listen, load, reconcile, then follow the cache."""
        await self.db.call(migrate.upgrade, self.db.engine)
        self.started_at = self.clock()
        self.pod_cache.add_listener(self._on_pod)
        await asyncio.gather(self.pod_cache.ready(), self.node_cache.ready())
        await self.reconcile()
        self._task = asyncio.create_task(self._run(), name="crater-gpu-accounting")
        log.info("crater GPU accounting started: %d open intervals", len(self.open))
        return self

    async def stop(self):
        self.pod_cache.remove_listener(self._on_pod)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.db.close()

    # -- reconcile on start ------------------------------------------------------------------

    async def reconcile(self):
        """Settle what the database says against the loaded pod cache (see the module docstring)."""
        rows = await self.db.run(_load_open)
        pods = {}
        for pod in list(self.pod_cache.objects.values()):
            uid = pod["metadata"].get("uid")
            if uid:
                pods[uid] = pod
        for row in rows:
            pod = pods.get(row.pod_uid)
            if pod is not None and hold_of(pod, self.device_requests) is not None \
                    and not hold_of(pod, self.device_requests).ended:
                self.open[(row.pod_uid, row.resource)] = Open(row.id, row.start, True)
                continue
            end, estimated = (ended_at(pod, None), False) if pod is not None else (None, True)
            if end is None:
                estimated = True
                end = await self._last_sample(row) or self.started_at
            await self._close(row.id, row.namespace, row.pod_name, row.start, end, estimated)
        holders = [uid for uid, pod in pods.items() if hold_of(pod, self.device_requests)]
        self.closed = await self.db.run(_recorded_uids, holders) - {k[0] for k in self.open}
        for pod in list(pods.values()):
            await self.observe(pod)

    async def _last_sample(self, row):
        """The time of the pod's last utilization sample in Prometheus, or None."""
        if self.prometheus is None:
            return None
        from .utilization import pod_utilization

        start, end = epoch(row.start), epoch(self.started_at)
        step = max(1.0, (end - start) / 10000)  # Prometheus answers at most 11,000 points
        try:
            points = await asyncio.wait_for(
                pod_utilization(self.prometheus, row.namespace, row.pod_name, start, end, step),
                PROMETHEUS_TIMEOUT)
        except Exception as e:  # PrometheusError, timeout: fall back to the restart time
            log.warning("no last utilization sample of %s/%s: %s", row.namespace, row.pod_name, e)
            return None
        return from_epoch(points[-1][0]) if points else None

    # -- following the cache ----------------------------------------------------------------

    def _on_pod(self, event_type, pod, old):
        self.idle.clear()
        self._events.put_nowait((event_type, pod, self.clock()))

    async def _run(self):
        while True:
            event_type, pod, seen = await self._events.get()
            try:
                if event_type == "DELETED":
                    await self.deleted(pod, seen)
                else:
                    await self.observe(pod)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("GPU accounting failed on %s of pod %s", event_type,
                              pod["metadata"].get("name"))
            if self._events.empty():
                self.idle.set()

    async def settled(self, timeout=30):
        """Wait until every event received so far is processed (tests, reports)."""
        if not self._events.empty() or not self.idle.is_set():
            await asyncio.wait_for(self.idle.wait(), timeout)

    async def observe(self, pod):
        """Open, firm up or close the intervals of ``pod`` as its current state says."""
        hold = hold_of(pod, self.device_requests)
        if hold is None or hold.uid in self.closed:
            return
        for resource, count in hold.devices.items():
            key = (hold.uid, resource)
            current = self.open.get(key)
            if current is None:
                current = await self._open(pod, hold, resource, count)
            elif hold.firm and not current.firm:
                await self.db.run(_set_start, current.id, hold.start)
                current.start, current.firm = hold.start, True
            if hold.ended:
                await self._close(current.id, hold.namespace, hold.name, current.start,
                                  hold.end or self.clock(), False)
                self.open.pop(key, None)
        if hold.ended:
            self.closed.add(hold.uid)

    async def deleted(self, pod, seen):
        """A pod left the cache: close what it held at its containers' end (else when seen)."""
        uid = pod["metadata"].get("uid")
        self.closed.discard(uid)
        keys = [key for key in self.open if key[0] == uid]
        if not keys and hold_of(pod, self.device_requests) is not None and \
                not await self.db.run(_recorded_uids, [uid]):
            # created and deleted between two looks: record it from its last state
            await self.observe(pod)
            keys = [key for key in self.open if key[0] == uid]
        meta = pod["metadata"]
        for key in keys:
            current = self.open.pop(key)
            await self._close(current.id, meta.get("namespace"), meta["name"], current.start,
                              ended_at(pod, seen), False)

    async def _open(self, pod, hold, resource, count):
        workload = self.classify(pod, system_namespaces=self.system_namespaces)
        node = self.node_cache.get(hold.node)
        try:
            groups = sorted(self.groups_of(workload.user)) if workload.user else []
        except Exception:
            log.exception("groups of %s unknown; interval recorded without groups", workload.user)
            groups = []
        start = hold.start or self.clock()
        values = dict(
            pod_uid=hold.uid, namespace=hold.namespace, pod_name=hold.name, user=workload.user,
            groups=groups, accelerator=accelerator_for(self.accelerators(), node, resource),
            resource=resource, count=count,
            gpu_equivalent=float(self.gpu_equivalent(node, resource)) if node is not None else 1.0,
            kind=workload.kind, workload=workload.name[:255], link=workload.link, node=hold.node,
            start=start, end=None, end_estimated=False, utilization=None)
        interval_id, start = await self.db.run(_insert, values)
        current = self.open[(hold.uid, resource)] = Open(interval_id, start, hold.firm)
        return current

    async def _close(self, interval_id, namespace, pod_name, start, end, estimated):
        utilization = await self._average(namespace, pod_name, start, end)
        await self.db.run(close_interval, interval_id, end, estimated, utilization)

    async def _average(self, namespace, pod_name, start, end):
        if self.prometheus is None or end <= start:
            return None
        from .utilization import pod_average_utilization

        try:
            return await asyncio.wait_for(pod_average_utilization(
                self.prometheus, namespace, pod_name, epoch(start), epoch(end)), PROMETHEUS_TIMEOUT)
        except Exception as e:
            log.warning("utilization of %s/%s unknown: %s", namespace, pod_name, e)
            return None


# -- database work (run on the Database's worker thread) ------------------------------------


def _load_open(session):
    rows = list(session.scalars(select(GpuInterval).where(GpuInterval.end.is_(None))))
    for row in rows:
        session.expunge(row)
    return rows


def _recorded_uids(session, uids):
    found = set()
    uids = list(uids)
    for i in range(0, len(uids), 500):
        found.update(session.scalars(select(GpuInterval.pod_uid).where(
            GpuInterval.pod_uid.in_(uids[i:i + 500]))))
    return found


def _insert(session, values):
    """Insert an open interval; an existing row of the same pod and resource is adopted."""
    row = session.scalars(select(GpuInterval).where(
        GpuInterval.pod_uid == values["pod_uid"], GpuInterval.resource == values["resource"])).first()
    if row is None:
        row = GpuInterval(**values)
        session.add(row)
        session.flush()
    return row.id, row.start


def _set_start(session, interval_id, start):
    row = session.get(GpuInterval, interval_id)
    if row is not None and row.end is None:
        row.start = start
