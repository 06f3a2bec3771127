"""GPU accounting on pod dicts: intervals open, firm up, close and reconcile as the pods say, and
the rollup report equals the report from the raw intervals.

The database is real: SQLite by default, a PostgreSQL server from Debian's binaries with
``QUEUE_DB=postgresql`` (as the queue tests). The pod and node caches are real
:class:`WatchCache` objects fed with :meth:`WatchCache.apply`, never started (no cluster here).
"""

import os
from datetime import date, datetime, timedelta

import pytest

from crater_hub.db import migrate
from crater_hub.db.session import Database
from crater_hub.db.usage_models import (
    GpuInterval,
    GpuUsageDaily,
    GpuUsageDailyGroup,
    GpuUsageMonthly,
)
from crater_hub.gpus import intervals
from crater_hub.gpus.accounting import Accounting, close_interval
from crater_hub.gpus.devices import gpu_equivalent
from crater_hub.gpus.usage_report import report, report_from_intervals, to_csv_rows
from crater_hub.gpus.workloads import classify, device_requests
from crater_hub.handlers.usage import BadQuery, parse_report_query
from crater_hub.kube.caches import WatchCache

from ..queue.postgres import PostgresServer

T0 = datetime(2026, 12, 5, 23, 59, 58)  # two seconds before a UTC midnight


def iso(dt):
    return dt.isoformat() + "Z"


class LoadedCache(WatchCache):
    """A cache whose first load is done and that never talks to a cluster."""

    def start(self):
        fut = self._first_load_future()
        if not fut.done():
            fut.set_result(None)
        return self


def node(name, labels=None, allocatable=None):
    return {"metadata": {"name": name, "labels": labels or {}, "resourceVersion": "1"},
            "status": {"allocatable": allocatable or {"nvidia.com/gpu": "4"}}}


def job_pod(uid, job_id="7", owner="ann", gpus=2, resource="nvidia.com/gpu", node_name="gpu-0",
            phase="Running", started=T0, finished=None, scheduled=None):
    state = {"running": {"startedAt": iso(started)}} if started and not finished else {}
    if finished:
        state = {"terminated": {"startedAt": iso(started) if started else "1970-01-01T00:00:00Z",
                                "finishedAt": iso(finished), "exitCode": 0}}
    conditions = [{"type": "PodScheduled", "status": "True",
                   "lastTransitionTime": iso(scheduled or started or T0)}]
    return {
        "metadata": {"name": f"crater-job-{job_id}-x", "namespace": "jobs", "uid": uid,
                     "resourceVersion": str(id(state)),
                     "labels": {"crater.io/kind": "job", "crater.io/job-id": job_id,
                                "crater.io/owner": owner},
                     "annotations": {"crater.io/owner-name": owner}},
        "spec": {"nodeName": node_name,
                 "containers": [{"name": "job", "resources": {"limits": {resource: str(gpus)}}}]},
        "status": {"phase": phase, "conditions": conditions,
                   "containerStatuses": [{"name": "job", "state": state}] if state else []},
    }


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    if os.environ.get("QUEUE_DB", "sqlite") != "postgresql":
        yield None
        return
    server = PostgresServer(tmp_path_factory.mktemp("pg")).start()
    yield server
    server.stop()


_dbs = iter(range(10**6))


@pytest.fixture
def db_url(tmp_path, postgres):
    if postgres is not None:
        return postgres.createdb(f"acct{next(_dbs)}")
    return f"sqlite:///{tmp_path / 'hub.sqlite'}"


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


async def make_accounting(db_url, pods=(), nodes=None, clock=None, groups=None, start=True):
    pod_cache, node_cache = LoadedCache("pods"), LoadedCache("nodes")
    for n in nodes or [node("gpu-0"), node("ts-0", {"nvidia.com/gpu.replicas": "4", "nvidia.com/gpu.count": "2",
                                     "nvidia.com/gpu.sharing-strategy": "time-slicing"},
                            {"nvidia.com/gpu": "8"}),
                       node("mig-0", {"nvidia.com/mig.strategy": "mixed",
                                      "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
                            {"nvidia.com/mig-1g.10gb": "7"})]:
        node_cache.apply("ADDED", n)
    for pod in pods:
        pod_cache.apply("ADDED", pod)
    accounting = Accounting(
        Database(db_url), pod_cache, node_cache, accelerators=lambda: [],
        groups_of=lambda user: (groups or {}).get(user, []), prometheus=None, classify=classify,
        device_requests=device_requests, gpu_equivalent=gpu_equivalent,
        clock=clock or Clock(T0 + timedelta(hours=1)))
    if start:
        await accounting.start()
    return accounting


def rows(accounting, model=GpuInterval):
    with accounting.db.Session() as session:
        return list(session.query(model))


async def test_start_and_end_come_from_the_pod():
    pod = job_pod("u1", started=T0, finished=T0 + timedelta(seconds=3), phase="Succeeded")
    hold = intervals.hold_of(pod, device_requests)
    assert hold.devices == {"nvidia.com/gpu": 2}
    assert (hold.start, hold.end, hold.ended) == (T0, T0 + timedelta(seconds=3), True)
    # a container that never ran reads 1970 on the kubelet: PodScheduled is the start then
    never = job_pod("u2", started=None, scheduled=T0, phase="Pending")
    assert intervals.hold_of(never, device_requests).start == T0
    unbound = job_pod("u3", node_name=None)
    assert intervals.hold_of(unbound, device_requests) is None
    assert intervals.split_by_day(T0, T0 + timedelta(seconds=5)) == [
        (date(2026, 12, 5), 2.0), (date(2026, 12, 6), 3.0)]


async def test_a_job_interval_opens_and_closes_at_the_containers_times(db_url):
    accounting = await make_accounting(db_url, groups={"ann": ["ml", "vision"]})
    cache = accounting.pod_cache
    cache.apply("ADDED", job_pod("u1", started=None, phase="Pending", scheduled=T0 - timedelta(seconds=1)))
    await accounting.settled()
    (row,) = rows(accounting)
    assert (row.user, row.kind, row.workload, row.count, row.end) == ("ann", "job", "7", 2, None)
    assert row.start == T0 - timedelta(seconds=1) and row.groups == ["ml", "vision"]
    cache.apply("MODIFIED", job_pod("u1", started=T0))  # the container started: the start firms up
    cache.apply("MODIFIED", job_pod("u1", started=T0, finished=T0 + timedelta(seconds=3),
                                    phase="Succeeded"))
    await accounting.settled()
    (row,) = rows(accounting)
    assert (row.start, row.end, row.end_estimated) == (T0, T0 + timedelta(seconds=3), False)
    daily = {(r.day, r.user): r.gpu_seconds for r in rows(accounting, GpuUsageDaily)}
    # 2 GPUs × 3 s, split at midnight: 2 × 2 s before, 2 × 1 s after
    assert daily == {(date(2026, 12, 5), "ann"): 4.0, (date(2026, 12, 6), "ann"): 2.0}
    groups = {(r.day, r.group): r.gpu_seconds for r in rows(accounting, GpuUsageDailyGroup)}
    assert groups[(date(2026, 12, 5), "ml")] == groups[(date(2026, 12, 5), "vision")] == 4.0
    # a later event of the ended pod changes nothing
    cache.apply("MODIFIED", job_pod("u1", started=T0, finished=T0 + timedelta(seconds=3),
                                    phase="Succeeded") | {"x": 1})
    await accounting.settled()
    assert len(rows(accounting)) == 1 and rows(accounting, GpuUsageDaily)[0].gpu_seconds in (4.0, 2.0)
    await accounting.stop()


async def test_time_sliced_and_mig_count_their_share(db_url):
    accounting = await make_accounting(db_url)
    end = T0 + timedelta(seconds=10)
    accounting.pod_cache.apply("ADDED", job_pod("ts", job_id="1", gpus=2, node_name="ts-0",
                                                finished=end, phase="Succeeded"))
    accounting.pod_cache.apply("ADDED", job_pod("mig", job_id="2", gpus=7, node_name="mig-0",
                                                resource="nvidia.com/mig-1g.10gb", finished=end,
                                                phase="Succeeded"))
    await accounting.settled()
    by_job = {r.workload: r for r in rows(accounting)}
    assert by_job["1"].gpu_equivalent == 0.25 and by_job["2"].accelerator == "mig-1g-10gb"
    result = await accounting.db.run(report, date(2026, 12, 5), date(2026, 12, 6), "user",
                                     T0 + timedelta(hours=1))
    (ann,) = result["rows"]
    # 2 replicas × 1/4 × 10 s + 7 instances × 1/7 × 10 s = 15 GPU-seconds
    assert ann["gpu_hours"] == pytest.approx(15 / 3600, abs=1e-6)
    assert ann["accelerators"]["mig-1g-10gb"] == pytest.approx(10 / 3600, abs=1e-6)
    await accounting.stop()


async def test_a_pod_deleted_without_an_end_closes_when_the_deletion_was_seen(db_url):
    clock = Clock(T0 + timedelta(seconds=30))
    accounting = await make_accounting(db_url, clock=clock)
    pod = job_pod("u9")
    accounting.pod_cache.apply("ADDED", pod)
    await accounting.settled()
    clock.now = T0 + timedelta(seconds=40)
    accounting.pod_cache.apply("DELETED", pod)
    await accounting.settled()
    (row,) = rows(accounting)
    assert row.end == T0 + timedelta(seconds=40) and not row.end_estimated
    await accounting.stop()


async def test_reconcile_after_a_restart(db_url):
    """Open intervals left by a stopped hub: a still-running pod stays open, an ended one closes
    at its finishedAt, a vanished one at the restart (estimated); a pod that ran entirely while
    the hub was down is recorded; an interval is never counted twice."""
    first = await make_accounting(db_url)
    for uid, job in (("run", "1"), ("ended", "2"), ("gone", "3")):
        first.pod_cache.apply("ADDED", job_pod(uid, job_id=job))
    await first.settled()
    await first.stop()

    restart = T0 + timedelta(minutes=10)
    pods = [job_pod("run", job_id="1"),
            job_pod("ended", job_id="2", finished=T0 + timedelta(seconds=5), phase="Failed"),
            job_pod("whole", job_id="4", finished=T0 + timedelta(seconds=7), phase="Succeeded")]
    second = await make_accounting(db_url, pods=pods, clock=Clock(restart))
    await second.settled()
    by_job = {r.workload: r for r in rows(second)}
    assert by_job["1"].end is None
    assert (by_job["2"].end, by_job["2"].end_estimated) == (T0 + timedelta(seconds=5), False)
    assert (by_job["3"].end, by_job["3"].end_estimated) == (restart, True)
    assert (by_job["4"].start, by_job["4"].end) == (T0, T0 + timedelta(seconds=7))
    await second.stop()

    third = await make_accounting(db_url, pods=pods, clock=Clock(restart + timedelta(minutes=1)))
    await third.settled()
    assert len(rows(third)) == 4
    now = restart + timedelta(minutes=1)
    fast = await third.db.run(report, date(2026, 12, 5), date(2026, 12, 6), "user", now)
    slow = await third.db.run(report_from_intervals, date(2026, 12, 5), date(2026, 12, 6), "user", now)
    assert fast == slow
    # ended 2 × 5 s, whole 2 × 7 s, gone 2 × 10 min, run 2 × 11 min (open, up to now)
    expected = 2 * (5 + 7 + 600 + 660)
    assert fast["rows"][0]["gpu_hours"] == pytest.approx(expected / 3600, abs=1e-6)
    csv_rows = to_csv_rows(fast)
    assert csv_rows[0][:3] == ["by", "name", "gpu_hours"] and csv_rows[1][1] == "ann"
    await third.stop()


def test_monthly_rollups_and_reports_across_month_edges(db_url):
    """Intervals closed across month ends fill the monthly rollup with the sum of their days; the
    report by user (whole months from it, edge days from the daily table) equals the report from
    the raw intervals for ranges with and without whole months."""
    db = Database(db_url)
    migrate.upgrade(db.engine)
    spans = [("ann", datetime(2026, 9, 29, 20), datetime(2026, 10, 2, 4), 0.5),  # Sep 29 → Oct 2
             ("ann", datetime(2026, 10, 15), datetime(2026, 10, 15, 1), None),
             ("bob", datetime(2026, 11, 30, 23), datetime(2026, 12, 1, 2), 0.25),  # Nov → Dec
             ("bob", datetime(2026, 12, 3), datetime(2026, 12, 3, 6), 1.0)]

    def load(session):
        for i, (user, start, end, util) in enumerate(spans):
            interval = GpuInterval(pod_uid=f"u{i}", namespace="jobs", pod_name=f"p{i}", user=user,
                                   groups=["ml"], accelerator="a100", resource="nvidia.com/gpu",
                                   count=2, gpu_equivalent=1.0, kind="job", workload=str(i),
                                   link=None, node="gpu-0", start=start, end=None,
                                   end_estimated=False, utilization=None)
            session.add(interval)
            session.flush()
            close_interval(session, interval.id, end, False, util)
        session.commit()

    db.run_sync(load)
    with db.Session() as session:
        monthly = {(r.month, r.user): r.gpu_seconds for r in session.query(GpuUsageMonthly)}
    # ann: Sep 29 20:00 → Oct 2 04:00 on 2 GPUs is 28 h in September and 28 h in October, + 1 h
    assert monthly[(date(2026, 9, 1), "ann")] == pytest.approx(2 * 28 * 3600)
    assert monthly[(date(2026, 10, 1), "ann")] == pytest.approx(2 * (28 + 1) * 3600)
    assert monthly[(date(2026, 11, 1), "bob")] == pytest.approx(2 * 3600)
    assert monthly[(date(2026, 12, 1), "bob")] == pytest.approx(2 * (2 + 6) * 3600)
    now = datetime(2026, 12, 6, 12)
    for start, end in ((date(2026, 9, 30), date(2026, 12, 2)),  # edges + Oct, Nov whole
                       (date(2026, 10, 1), date(2026, 11, 30)),  # whole months only
                       (date(2026, 10, 2), date(2026, 10, 31)),  # no whole month
                       (date(2026, 9, 1), date(2026, 12, 6))):  # up to today (not a whole month)
        fast = db.run_sync(report, start, end, "user", now)
        assert fast == db.run_sync(report_from_intervals, start, end, "user", now), (start, end)
        assert fast["rows"]
    db.close()


def test_report_query_is_validated():
    today = date(2026, 12, 6)
    assert parse_report_query({}, today) == (date(2026, 11, 7), today, "user", "json")
    for args, field in (({"start": "12/01/2026"}, "start"), ({"end": "x"}, "end"),
                        ({"by": "team"}, "by"), ({"format": "xml"}, "format"),
                        ({"start": "2026-12-06", "end": "2026-12-01"}, "start"),
                        ({"start": "2020-01-01"}, "start")):
        with pytest.raises(BadQuery, match=field):
            parse_report_query(args, today)


