"""Spawn wall time of the real hub on localkube, its Kubernetes part, and a bare-process baseline.

    .venv/bin/python -m benchmarks.spawn_time [-n 10]

Starts localkube and the hub as the e2e tests do, then for each of N users (one after another):
- spawn: REST POST to the progress stream's "ready" event (what a user waits for);
- Kubernetes part: the pod's creation to its container running, timed on a pod watch;
- baseline: the same ``jupyterhub-singleuser`` with the same environment started as a plain local
  process, from exec to its first 200 on ``/api/status``: the floor any spawner pays.
Prints medians and ratios; no pass/fail.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kubernetes_asyncio import watch
from tornado.httpclient import AsyncHTTPClient

from crater_hub.embedded import use_kubeconfig
from crater_hub.kube.client import close_shared_clients, shared_client
from crater_hub.localkube import LocalKubeProcess
from tests.e2e.hub import HubProcess, api_request, free_port, spawn, stop_server

NAMESPACE = "default"


class PodClock:
    """Local times at which each pod was first seen created and first seen with a running container."""

    def __init__(self):
        self.created = {}
        self.running = {}

    async def follow(self, core):
        async with watch.Watch().stream(core.list_namespaced_pod, NAMESPACE) as events:
            async for event in events:
                now = time.monotonic()
                pod = event["object"]
                self.created.setdefault(pod.metadata.uid, now)
                statuses = pod.status.container_statuses or []
                if any(s.state.running for s in statuses):
                    self.running.setdefault(pod.metadata.uid, now)

    def kubernetes_part(self, uid):
        return self.running[uid] - self.created[uid]


async def bare_singleuser_start(pod, timeout=60):
    """Seconds for ``jupyterhub-singleuser``, with the pod's environment, to answer on a free port."""
    container = pod.spec.containers[0]
    env = {**os.environ, **{e.name: e.value for e in container.env if e.value is not None}}
    port = free_port()
    env["JUPYTERHUB_SERVICE_URL"] = f"http://127.0.0.1:{port}{env['JUPYTERHUB_SERVICE_PREFIX']}"
    url = f"http://127.0.0.1:{port}{env['JUPYTERHUB_SERVICE_PREFIX']}api/status"
    headers = {"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"}
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as home:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("jupyterhub-singleuser")),
                "--allow-root",
                f"--ServerApp.root_dir={home}",
            ],
            env=env,
            cwd=home,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while time.monotonic() - began < timeout:
                try:
                    r = await AsyncHTTPClient().fetch(url, headers=headers, raise_error=False)
                    if r.code == 200:
                        return time.monotonic() - began
                except OSError:  # not listening yet
                    pass
                await asyncio.sleep(0.02)
            raise TimeoutError(f"bare jupyterhub-singleuser did not answer within {timeout}s")
        finally:
            proc.terminate()
            proc.wait()


async def measure(hub, n):
    core = shared_client("CoreV1Api")
    clock = PodClock()
    follower = asyncio.create_task(clock.follow(core))
    rows = []
    try:
        for i in range(n):
            user = f"bench-{i}"
            await api_request(hub, f"users/{user}", "POST")
            started = await spawn(hub, user)
            server = (await api_request(hub, f"users/{user}")).data["servers"][""]
            pod = await core.read_namespaced_pod(server["state"]["pod_name"], NAMESPACE)
            baseline = await bare_singleuser_start(pod)
            rows.append((started.seconds, clock.kubernetes_part(pod.metadata.uid), baseline))
            print(
                f"{user}: spawn {started.seconds:.3f}s, kubernetes part "
                f"{rows[-1][1]:.3f}s, bare process {baseline:.3f}s",
                flush=True,
            )
            await stop_server(hub, user)
    finally:
        follower.cancel()
        await close_shared_clients()
    return rows


def report(rows):
    spawn_s, kube_s, bare_s = (statistics.median(column) for column in zip(*rows, strict=True))
    print(
        f"\nmedian of {len(rows)} sequential spawns (real hub + proxy + KubeSpawner on localkube):"
    )
    print(f"  spawn wall time (POST to ready):          {spawn_s:.3f}s")
    print(
        f"  Kubernetes part (pod created to running): {kube_s:.3f}s ({kube_s / spawn_s:.1%} of spawn)"
    )
    print(f"  baseline, bare jupyterhub-singleuser:     {bare_s:.3f}s")
    print(f"  ratio spawn / baseline:                   {spawn_s / bare_s:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="number of spawns (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spawn-bench-") as state:
        with LocalKubeProcess(Path(state) / "localkube") as cluster:
            use_kubeconfig(cluster.kubeconfig)  # for crater_hub.kube.client
            hub = HubProcess(Path(state) / "hub", cluster.kubeconfig).start()
            try:
                rows = asyncio.run(measure(hub, args.n))
            finally:
                hub.stop()
    report(rows)


if __name__ == "__main__":
    main()
