"""Job submits per second through the hub's REST API, against a cheap hub endpoint.

    .venv/bin/python -m benchmarks.submit_rate [--submits 2000 --concurrency 16 --users 20]

Starts localkube and the real hub as the queue tests do (``tests/queue/crater-queue.yaml``,
SQLite), makes ``--users`` users with a token each, then with one client (tornado's
AsyncHTTPClient, ``--concurrency`` requests in flight, users in turn):

- baseline: ``GET /hub/api/user`` (token check, the user's model: what every API call pays);
- ``POST /hub/api/crater/jobs`` with a 2 × A100 job, within the users' quota (2 GPUs), while the
  A100 node is cordoned: every job could run (a job that never could is refused at submit) but
  none fits now, so every job stays queued and the run measures the submit path alone:
  validation, the insert (committed before the answer), one admission cycle (the answer carries
  the job's position), the read of the new job;
- the baseline again, now with the submitted jobs queued.

Requests go to the hub's own port, not through configurable-http-proxy, so the proxy's share of
the two cores does not blur the hub's. Prints requests per second, median and p95 latency, and
the ratios; no pass/fail (target: >= 500 submits/s).
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crater_hub.localkube import LocalKubeProcess  # noqa: E402
from tests.e2e.hub import HubProcess, api_request  # noqa: E402

QUEUE_CONFIG = Path(__file__).resolve().parent.parent / "tests" / "queue" / "crater-queue.yaml"
#: within the default quota (2 GPUs), on the A100 node that :func:`cordon` closes: queued always
QUEUED_JOB = {"profile": "gpu", "accelerator": "a100", "gpus": 2, "command": "true",
              "name": "bench"}
A100_NODE = "gpu-a100-0"


class Hub:
    """localkube and the hub with the queue tests' settings, in a temporary folder."""

    def __init__(self, state):
        self.state = Path(state)
        self.cluster = self.hub = None

    def __enter__(self):
        self.cluster = LocalKubeProcess(self.state / "localkube", tie_to_parent=True).start(
            timeout=60)
        asyncio.run(cordon(self.cluster.kubeconfig, A100_NODE))
        self.hub = HubProcess(self.state / "hub", self.cluster.kubeconfig,
                              env={"CRATER_CONFIG_FILE": str(QUEUE_CONFIG)}).start(timeout=90)
        return self.hub

    def __exit__(self, *exc):
        if self.hub is not None:
            self.hub.stop()
        self.cluster.stop()


async def cordon(kubeconfig, node):
    """Mark ``node`` unschedulable, as ``kubectl cordon`` does: its GPUs count, none is free."""
    configuration = k8s_client.Configuration()
    await k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    async with k8s_client.ApiClient(configuration) as api:
        await k8s_client.CoreV1Api(api).patch_node(node, {"spec": {"unschedulable": True}})


def direct_url(hub, path):
    """``path`` (under /hub/api/) on the hub's own port."""
    return f"http://127.0.0.1:{hub.hub_port}/hub/api/{path}"


async def make_users(hub, count, prefix="bench"):
    tokens = []
    for i in range(count):
        name = f"{prefix}{i}"
        r = await api_request(hub, f"users/{name}", "POST")
        assert r.code in (201, 409), r
        r = await api_request(hub, f"users/{name}/tokens", "POST", {"note": "benchmark"})
        assert r.code == 201, r
        tokens.append(r.data["token"])
    return tokens


def hub_rss(hub):
    """The hub process's resident set, bytes (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{hub.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def load(hub, tokens, total, concurrency, method, path, body=None, expect=200):
    """``total`` requests, ``concurrency`` at a time: (requests per second, latencies in s)."""
    client = AsyncHTTPClient(force_instance=True, max_clients=concurrency)
    payload = None if body is None else json.dumps(body)
    latencies, failures = [], []
    counter = iter(range(total))

    async def worker():
        for i in counter:
            request = HTTPRequest(direct_url(hub, path), method=method, body=payload,
                                  headers={"Authorization": f"token {tokens[i % len(tokens)]}"},
                                  request_timeout=120)
            began = time.perf_counter()
            r = await client.fetch(request, raise_error=False)
            latencies.append(time.perf_counter() - began)
            if r.code != expect:
                failures.append((r.code, r.body[:200]))

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - began
    client.close()
    assert not failures, f"{len(failures)} of {total} failed, e.g. {failures[:3]}"
    return total / wall, latencies


def line(label, rate, latencies):
    ms = sorted(x * 1000 for x in latencies)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    return (f"  {label:<44} {rate:8.1f} req/s   median {statistics.median(ms):7.1f} ms   "
            f"p95 {p95:7.1f} ms   (n={len(ms)})")


async def measure(hub, args):
    tokens = await make_users(hub, args.users)
    # warm up both paths (imports, caches, the queue's first cycles)
    await load(hub, tokens, 100, args.concurrency, "GET", "user")
    await load(hub, tokens, 50, args.concurrency, "POST", "crater/jobs", QUEUED_JOB, 201)
    base, base_lat = await load(hub, tokens, args.submits, args.concurrency, "GET", "user")
    print(line("baseline GET /hub/api/user", base, base_lat), flush=True)
    rate, lat = await load(hub, tokens, args.submits, args.concurrency, "POST", "crater/jobs",
                           QUEUED_JOB, 201)
    print(line(f"POST /hub/api/crater/jobs (queue 50 -> {50 + args.submits})", rate, lat),
          flush=True)
    after, after_lat = await load(hub, tokens, args.submits, args.concurrency, "GET", "user")
    print(line(f"baseline again, {50 + args.submits} jobs queued", after, after_lat), flush=True)
    print(f"\nsubmits: {rate:.0f}/s (target >= 500/s) = {rate / base:.2f} x the baseline's "
          f"{base:.0f} req/s; {args.concurrency} in flight, {os.cpu_count()} cores, SQLite")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submits", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--users", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="submit-bench-") as state, Hub(state) as hub:
        asyncio.run(measure(hub, args))


if __name__ == "__main__":
    main()
