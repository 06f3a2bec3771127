"""Hub memory per job record: RSS growth from 10,000 queued jobs, against 10,000 cheap requests.

    .venv/bin/python -m benchmarks.job_memory [--jobs 10000 --concurrency 16 --users 50]

Starts localkube and the real hub as ``benchmarks/submit_rate.py`` does (the queue tests'
settings, SQLite), warms both paths up, then reads the hub process's resident set
(``VmRSS`` of ``/proc/<pid>/status``):

1. baseline: before and after ``--jobs`` requests of ``GET /hub/api/user`` (which create
   nothing): what serving that many requests costs the hub's memory by itself (allocator high
   water marks, caches, logging);
2. before and after ``--jobs`` submits of a job that stays queued (over the users' quota), once
   the queue has run a few admission cycles over all of them. Queued is the most a job can cost:
   the queue keeps every unfinished job's record in memory (with its engine view, its position,
   estimate and reason), and forgets a finished one once its Kubernetes Job is cleaned up.

Prints the growths, the net growth per job and the ratio; no pass/fail (target: <= 50 MB for
10,000 jobs).
"""

import argparse
import asyncio
import gc
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.submit_rate import QUEUED_JOB, Hub, hub_rss, load, make_users  # noqa: E402
from tests.e2e.hub import api_request  # noqa: E402

MB = 2**20


async def settle(hub, seconds=3.0):
    """Let the hub finish what it queued (admission cycles, logging), then read its RSS."""
    await asyncio.sleep(seconds)
    return hub_rss(hub)


async def measure(hub, args):
    tokens = await make_users(hub, args.users)
    await load(hub, tokens, 500, args.concurrency, "GET", "user")
    await load(hub, tokens, 200, args.concurrency, "POST", "crater/jobs", QUEUED_JOB, 201)
    gc.collect()
    start = await settle(hub)
    rate, _ = await load(hub, tokens, args.jobs, args.concurrency, "GET", "user")
    after_requests = await settle(hub)
    baseline = after_requests - start
    print(f"  RSS at start (after warm-up, 200 jobs queued): {start / MB:8.1f} MB")
    print(f"  after {args.jobs:,} GET /hub/api/user ({rate:.0f}/s): {after_requests / MB:8.1f} MB "
          f"(baseline growth {baseline / MB:+.1f} MB)", flush=True)
    rate, _ = await load(hub, tokens, args.jobs, args.concurrency, "POST", "crater/jobs",
                         QUEUED_JOB, 201)
    after_jobs = await settle(hub)
    r = await api_request(hub, "crater/jobs?all=1&state=queued")
    queued = len(r.data["jobs"]) if r.code == 200 else "?"
    growth = after_jobs - after_requests
    print(f"  after {args.jobs:,} submits ({rate:.0f}/s), all queued: {after_jobs / MB:8.1f} MB "
          f"(growth {growth / MB:+.1f} MB; the list API shows {queued} queued, capped at 1000)")
    net = growth - baseline
    ratio = (f"{growth / baseline:.1f}x the baseline's growth" if baseline >= MB
             else "the baseline's growth is below 1 MB (no ratio)")
    print(f"\n{args.jobs:,} queued jobs: {growth / MB:+.1f} MB (target <= 50 MB), "
          f"{growth / args.jobs / 1024:.1f} KiB per job; net of the baseline's "
          f"{baseline / MB:+.1f} MB: {net / MB:+.1f} MB, {net / args.jobs / 1024:.1f} KiB per job; "
          f"{ratio}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--users", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="job-memory-bench-") as state, Hub(state) as hub:
        asyncio.run(measure(hub, args))


if __name__ == "__main__":
    main()
