"""CraterSpawner against plain KubeSpawner: the same profile, spawned on two hubs, interleaved.

    .venv/bin/python -m benchmarks.spawner_overhead [-n 10]

One localkube; two real hubs from ``jupyterhub_config.py``: one with the demo crater profiles
(CraterSpawner validates, checks quota under the user's lock and capacity, shapes the pod), one
with ``--JupyterHub.spawner_class=kubespawner.KubeSpawner`` and a KubeSpawner ``profile_list``
entry giving the pod the same resources (GPU profile, 1 × T4). Each round spawns once on each hub,
after one uncounted warm-up spawn on each, the order alternating (ABBA) so drift of the machine does not favour either; every server is
stopped before the next spawn. For each spawn:

- wall time: REST POST to the progress stream's "ready" event (what a user waits for);
- hub part: POST to the pod's first appearance in a pod watch, the time the spawner spends before
  Kubernetes sees anything — where CraterSpawner's extra work happens;
- Kubernetes part: the pod's creation to its container running (scheduler and kubelet).

Prints medians and the ratios CraterSpawner / KubeSpawner; no pass/fail.
"""

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from crater_hub.embedded import use_kubeconfig
from crater_hub.kube.client import close_shared_clients, shared_client
from crater_hub.localkube import LocalKubeProcess
from tests.e2e.hub import REPO, HubProcess, api_request, spawn, stop_server

from .spawn_time import PodClock

NAMESPACE = "default"
DEMO_CRATER = REPO / "crater_hub" / "localkube" / "demo-crater.yaml"
CRATER_OPTIONS = {"profile": "gpu", "accelerator": "t4", "gpus": 1}
# What demo-crater.yaml's "gpu" profile with 1 × T4 makes CraterSpawner set, as plain KubeSpawner
# profile_list config (memory in bytes, as CraterSpawner passes it).
PLAIN_PROFILE = [{
    "slug": "gpu-t4-1",
    "display_name": "GPU, 1 × T4",
    "kubespawner_override": {
        "cpu_guarantee": 2.0, "cpu_limit": 8.0,
        "mem_guarantee": 8 * 1024**3, "mem_limit": 32 * 1024**3,
        "extra_resource_guarantees": {"nvidia.com/gpu": "1"},
        "extra_resource_limits": {"nvidia.com/gpu": "1"},
        "node_selector": {"nvidia.com/gpu.product": "NVIDIA-Tesla-T4"},
    },
}]


async def one_spawn(hub, user, options, clock, core):
    began = time.monotonic()
    started = await spawn(hub, user, options)
    server = (await api_request(hub, f"users/{user}")).data["servers"][""]
    pod = await core.read_namespaced_pod(server["state"]["pod_name"], NAMESPACE)
    gpus = pod.spec.containers[0].resources.limits.get("nvidia.com/gpu")
    assert gpus == "1", f"{user}'s pod has nvidia.com/gpu={gpus!r}: the profiles differ"
    hub_part = clock.created[pod.metadata.uid] - began
    kube_part = clock.kubernetes_part(pod.metadata.uid)
    await stop_server(hub, user)
    return started.seconds, hub_part, kube_part


async def measure(crater, plain, n):
    core = shared_client("CoreV1Api")
    clock = PodClock()
    follower = asyncio.create_task(clock.follow(core))
    rows = {"crater": [], "plain": []}
    sides = {"crater": (crater, CRATER_OPTIONS), "plain": (plain, {"profile": "gpu-t4-1"})}
    try:
        for side, (hub, options) in sides.items():  # warm-up, not counted: first imports, caches
            await api_request(hub, f"users/warmup-{side}", "POST")
            await one_spawn(hub, f"warmup-{side}", options, clock, core)
        for i in range(n):
            order = ("crater", "plain") if i % 2 == 0 else ("plain", "crater")
            for side in order:
                hub, options = sides[side]
                user = f"bench-{side}-{i}"
                await api_request(hub, f"users/{user}", "POST")
                wall, hub_part, kube_part = await one_spawn(hub, user, options, clock, core)
                rows[side].append((wall, hub_part, kube_part))
                print(f"{user}: spawn {wall:.3f}s, hub part {hub_part * 1000:.1f} ms, "
                      f"Kubernetes part {kube_part * 1000:.1f} ms", flush=True)
    finally:
        follower.cancel()
        await close_shared_clients()
    return rows


def report(rows):
    med = {side: [statistics.median(c) for c in zip(*r, strict=True)] for side, r in rows.items()}
    (c_wall, c_hub, c_kube), (p_wall, p_hub, p_kube) = med["crater"], med["plain"]
    print(f"\nmedians of {len(rows['crater'])} spawns each, interleaved (GPU profile, 1 × T4):")
    print(f"  spawn wall time: CraterSpawner {c_wall:.3f}s, KubeSpawner {p_wall:.3f}s, "
          f"ratio {c_wall / p_wall:.3f}x")
    print(f"  hub part (POST to pod created): CraterSpawner {c_hub * 1000:.1f} ms, "
          f"KubeSpawner {p_hub * 1000:.1f} ms, difference {(c_hub - p_hub) * 1000:+.1f} ms")
    print(f"  Kubernetes part (pod created to running): CraterSpawner {c_kube * 1000:.1f} ms, "
          f"KubeSpawner {p_kube * 1000:.1f} ms")
    print("  the rest is the single-user server starting and the hub noticing it")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="spawns per spawner (default 10)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spawner-bench-") as state:
        with LocalKubeProcess(Path(state) / "localkube") as cluster:
            use_kubeconfig(cluster.kubeconfig)  # for crater_hub.kube.client
            crater = HubProcess(Path(state) / "crater", cluster.kubeconfig,
                                env={"CRATER_CONFIG_FILE": str(DEMO_CRATER)})
            plain_config = Path(state) / "plain.json"  # JSON is YAML: a config file as ours are
            plain_config.write_text(json.dumps({"KubeSpawner": {"profile_list": PLAIN_PROFILE}}))
            plain = HubProcess(Path(state) / "plain", cluster.kubeconfig,
                               env={"CRATER_CONFIG_FILE": str(plain_config)},
                               extra_args=["--JupyterHub.spawner_class=kubespawner.KubeSpawner"])
            crater.start()
            plain.start()
            try:
                rows = asyncio.run(measure(crater, plain, args.n))
            except Exception:
                for hub in (crater, plain):
                    print(f"--- {hub.log_file}:\n{hub.log_tail(30)}")
                raise
            finally:
                crater.stop()
                plain.stop()
    report(rows)


if __name__ == "__main__":
    main()
