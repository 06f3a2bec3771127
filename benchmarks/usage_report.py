"""The GPU usage admin report at 1,000 users over 90 days, against aggregating the raw intervals.

    .venv/bin/python -m benchmarks.usage_report [--users 1000 --days 90 --per-day 3] [--runs 5]
                                                [--db sqlite:///path.sqlite]

Input: a SQLite file (the embedded hub's database; any SQLAlchemy URL with --db) migrated to
head, holding ``--per-day`` intervals per user per day on average (Poisson-ish: 0 to 2×) for
``--days`` days — 270,000 intervals at the defaults — across three accelerators (a100, t4, a MIG
slice at 1/7 of a GPU), three workload kinds and 50 groups (1–2 per user), each closed with a
utilization; plus 200 intervals still open. The rollups are what closing those intervals
writes (:func:`crater_hub.gpus.accounting.rollup_amounts` of every interval: daily per user,
group and in total, monthly per user; summed and
inserted in bulk rather than one close at a time, to load the data quickly).

Figures (milliseconds, median of --runs after one untimed run):
- ``usage_report.report`` by user and by group over the 90 days (the target is <= 200 ms):
  rollups + open intervals (by user: monthly rollups for the whole months, daily ones for the
  days at the edges);
- baseline: ``usage_report.report_from_intervals``, the same report aggregated per request from
  the raw interval rows, same database, same run; the two results are checked to be equal
  (to 1e-6 hours).
"""

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crater_hub.db import migrate  # noqa: E402
from crater_hub.db.session import Database  # noqa: E402
from crater_hub.db.usage_models import GpuInterval  # noqa: E402
from crater_hub.gpus.accounting import rollup_amounts, rollup_row  # noqa: E402
from crater_hub.gpus.usage_report import report, report_from_intervals  # noqa: E402

NOW = datetime(2026, 12, 6, 12, 0, 0)
ACCELERATORS = (("a100", "nvidia.com/gpu", 1.0), ("t4", "nvidia.com/gpu", 1.0),
                ("mig-1g-10gb", "nvidia.com/mig-1g.10gb", 1 / 7))
KINDS = ("server", "job", "job", "ray")


def populate(session, users, days, per_day, seed=1):
    rng = random.Random(seed)
    groups = [f"group-{i}" for i in range(50)]
    membership = {f"user-{u:04d}": sorted(rng.sample(groups, rng.choice((1, 1, 2))))
                  for u in range(users)}
    first_day = (NOW - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0)
    n = 0
    batch = []
    for user, user_groups in membership.items():
        for d in range(days):
            for _ in range(rng.randint(0, 2 * per_day)):
                start = first_day + timedelta(days=d, seconds=rng.randint(0, 86000))
                if start >= NOW:
                    continue
                end = min(start + timedelta(seconds=rng.randint(60, 6 * 3600)), NOW)
                acc, resource, share = rng.choice(ACCELERATORS)
                kind = rng.choice(KINDS)
                n += 1
                batch.append(dict(
                    pod_uid=f"uid-{n}", namespace="jobs", pod_name=f"pod-{n}", user=user,
                    groups=user_groups, accelerator=acc, resource=resource,
                    count=rng.choice((1, 1, 2, 4, 8)) if share == 1 else 7, gpu_equivalent=share,
                    kind=kind, workload=str(n), link=None, node=f"node-{n % 500}", start=start,
                    end=end, end_estimated=False, utilization=round(rng.random(), 3)))
    for i in range(200):  # running now
        user = f"user-{(i * 5) % users:04d}"
        n += 1
        batch.append(dict(
            pod_uid=f"uid-{n}", namespace="default", pod_name=f"jupyter-{i}", user=user,
            groups=membership[user], accelerator="a100", resource="nvidia.com/gpu", count=1,
            gpu_equivalent=1.0, kind="server", workload="", link=None, node="node-0",
            start=NOW - timedelta(hours=rng.randint(1, 48)), end=None, end_estimated=False,
            utilization=None))
    session.execute(insert(GpuInterval), batch)
    sums = {}
    for values in batch:
        if values["end"] is None:
            continue
        for model, key, amount, measured, busy in rollup_amounts(SimpleNamespace(**values)):
            total = sums.setdefault((model, key), [0.0, 0.0, 0.0])
            total[0] += amount
            total[1] += measured
            total[2] += busy
    rows = []
    for (model, key), (amount, measured, busy) in sums.items():
        row = rollup_row(model, key)
        row.gpu_seconds, row.measured_seconds, row.busy_seconds = amount, measured, busy
        rows.append(row)
    session.add_all(rows)
    return n


def close(a, b, path="report"):
    """Whether two reports are equal, numbers to 1e-6."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], f"{path}.{k}") for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y, path) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(a - b) <= 1e-6
    return a == b


def timed(db, fn, *args, runs):
    """Median milliseconds of ``runs`` calls after one untimed call (warms SQLite's page cache
    after the bulk load, for both sides alike), and the last result."""
    db.run_sync(fn, *args)
    times, result = [], None
    for _ in range(runs):
        began = time.perf_counter()
        result = db.run_sync(fn, *args)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--per-day", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-runs", type=int, default=3)
    parser.add_argument("--db", default=None)
    args = parser.parse_args()
    url = args.db or f"sqlite:///{tempfile.mkdtemp(prefix='crater-usage-')}/hub.sqlite"
    db = Database(url)
    migrate.upgrade(db.engine)
    began = time.perf_counter()
    n = db.run_sync(populate, args.users, args.days, args.per_day)
    print(f"populated {n:,} intervals of {args.users:,} users over {args.days} days "
          f"in {time.perf_counter() - began:.0f} s ({url})")
    start = (NOW - timedelta(days=args.days - 1)).date()
    end = NOW.date()
    for by in ("user", "group"):
        fast_ms, fast = timed(db, report, start, end, by, NOW, runs=args.runs)
        slow_ms, slow = timed(db, report_from_intervals, start, end, by, NOW, runs=args.baseline_runs)
        assert close(fast, slow), f"the two reports by {by} differ"
        print(f"report by {by:5}: rollups {fast_ms:8.1f} ms   raw intervals {slow_ms:8.1f} ms   "
              f"ratio {slow_ms / fast_ms:6.1f}x   ({len(fast['rows'])} rows, "
              f"{fast['total_gpu_hours']:,.0f} GPU-hours, results equal)")
    db.close()


if __name__ == "__main__":
    main()
