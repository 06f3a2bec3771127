"""What following job logs costs the hub: 50 followers of chatty jobs, against re-reading.

    .venv/bin/python -m benchmarks.log_follow [--jobs 5 --followers 50 --seconds 20]

Starts localkube and the real hub as ``benchmarks/submit_rate.py`` does (the queue tests'
settings, SQLite; ``Crater.job_log_streams_per_user`` raised so that one admin may hold every
stream), submits ``--jobs`` chatty CPU jobs (each prints a 100-byte line every 50 ms, ~2 KB/s) and
waits until they run. Then, over ``--seconds`` each, it reads the hub process's CPU time
(``utime + stime`` of ``/proc/<pid>/stat``):

1. idle: nobody follows (the queue's loop and the watches, what the hub costs anyway);
2. now: ``--followers`` clients on ``GET .../logs?follow=1`` (Kubernetes' own ``follow=true``
   stream per follower, relayed as it arrives), spread over the jobs;
3. baseline, the re-read approach: the same number of clients each re-reading the job's whole
   log every 0.7 s (``GET .../logs``), which is what ``follow=1`` did before this change inside
   the hub (a full read of the pod's log about every 0.7 s per follower).

Prints the hub's CPU use in % of one core for each, net of idle, and the ratio; no pass/fail
(target: 50 followers cost < 10 % of one core). localkube (which serves the logs) is a separate
process, not counted.
"""

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.submit_rate import QUEUE_CONFIG, direct_url  # noqa: E402
from crater_hub.localkube import LocalKubeProcess  # noqa: E402
from tests.e2e.hub import HubProcess, api_request  # noqa: E402
from tests.helpers import wait_for  # noqa: E402

CHATTY = ("i=0; while true; do i=$((i+1)); printf 'line %08d %s\\n' $i "
          "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; "
          "sleep 0.05; done")
REREAD_EVERY = 0.7


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime, stime in clock ticks (USER_HZ)


async def window(hub, seconds):
    """% of one core the hub used over ``seconds``."""
    start, began = cpu_seconds(hub.proc.pid), time.monotonic()
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds(hub.proc.pid) - start) / (time.monotonic() - began)


async def measure(hub, args):
    r = await api_request(hub, "users/follower", "POST")
    r = await api_request(hub, "users/follower/tokens", "POST", {"note": "benchmark"})
    token = r.data["token"]
    ids = []
    for i in range(args.jobs):
        r = await api_request(hub, "crater/jobs", "POST",
                              {"name": f"chatty{i}", "profile": "cpu", "command": CHATTY},
                              token=token)
        assert r.code == 201, r
        ids.append(r.data["id"])

    async def running():
        for job_id in ids:
            r = await api_request(hub, f"crater/jobs/{job_id}", token=token)
            if r.data["state"] != "running":
                return False
        return True

    await wait_for(running, timeout=120, message="the chatty jobs to run")
    await asyncio.sleep(3)
    idle = await window(hub, args.seconds)
    print(f"  idle hub, {args.jobs} chatty jobs running:            {idle:6.2f} % of one core",
          flush=True)

    client = AsyncHTTPClient(force_instance=True, max_clients=args.followers + 10)
    received = [0] * args.followers

    def follower(i):
        def on_chunk(data):
            received[i] += len(data)
        return client.fetch(HTTPRequest(
            direct_url(hub, f"crater/jobs/{ids[i % len(ids)]}/logs?follow=1"),
            headers={"Authorization": f"token {token}"}, request_timeout=3600,
            streaming_callback=on_chunk), raise_error=False)

    follows = [asyncio.ensure_future(follower(i)) for i in range(args.followers)]
    await wait_for(lambda: all(received), timeout=60, message="every follower to get output")
    await asyncio.sleep(2)
    before = sum(received)
    now = await window(hub, args.seconds)
    rate = (sum(received) - before) / args.seconds
    print(f"  {args.followers} followers, follow=1 (Kubernetes' stream):  {now:6.2f} % of one "
          f"core ({rate / 1024:.0f} KiB/s relayed)", flush=True)
    client.close()  # the followers' connections close: their fetches end
    await asyncio.gather(*follows, return_exceptions=True)
    await asyncio.sleep(3)  # the hub notices the closed connections

    stop = asyncio.Event()
    rereads = [0]

    async def rereader(i):
        c = AsyncHTTPClient(force_instance=True)
        while not stop.is_set():
            r = await c.fetch(HTTPRequest(
                direct_url(hub, f"crater/jobs/{ids[i % len(ids)]}/logs"),
                headers={"Authorization": f"token {token}"}, request_timeout=120),
                raise_error=False)
            assert r.code == 200, r.code
            rereads[0] += 1
            await asyncio.sleep(REREAD_EVERY)
        c.close()

    readers = [asyncio.ensure_future(rereader(i)) for i in range(args.followers)]
    await asyncio.sleep(3)
    before = rereads[0]
    baseline = await window(hub, args.seconds)
    stop.set()
    await asyncio.gather(*readers)
    print(f"  baseline: {args.followers} re-readers, whole log every {REREAD_EVERY} s: "
          f"{baseline:6.2f} % of one core ({(rereads[0] - before) / args.seconds:.0f} reads/s)",
          flush=True)
    net_now, net_base = max(now - idle, 0.01), max(baseline - idle, 0.01)
    print(f"\n{args.followers} followers: {now:.1f} % of one core ({net_now:.1f} % net of idle; "
          f"target < 10 %); re-reading: {baseline:.1f} % ({net_base:.1f} % net); "
          f"{net_base / net_now:.1f}x less")
    for job_id in ids:
        await api_request(hub, f"crater/jobs/{job_id}", "DELETE")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--followers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crater-bench-") as state:
        state = Path(state)
        cluster = LocalKubeProcess(state / "localkube", tie_to_parent=True).start(timeout=60)
        hub = HubProcess(state / "hub", cluster.kubeconfig,
                         env={"CRATER_CONFIG_FILE": str(QUEUE_CONFIG)},
                         extra_args=[f"--Crater.job_log_streams_per_user={args.followers}"])
        try:
            hub.start(timeout=90)
            asyncio.run(measure(hub, args))
        finally:
            hub.stop()
            cluster.stop()


if __name__ == "__main__":
    main()
