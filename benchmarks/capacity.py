"""Capacity per request: the watch-fed Inventory against a LIST of nodes and pods per request.

    .venv/bin/python benchmarks/capacity.py [--nodes 5000 --pods 100000]
                                            [--baseline-nodes 500 --baseline-pods 10000]

1. **Inventory at scale.** 5,000 nodes × 8 GPUs (40,000 GPUs, three models) and 100,000 pods are
   fed through the caches' event path (``WatchCache.apply``, the code the watch runs; no API), then
   ``Inventory.capacity()`` is timed per request, with no change in between and with one pod change
   (a GPU pod deleted or added) between requests; ``fits()`` and the one-event cost too.
2. **Baseline (what Genet does).** Per request, LIST nodes and all pods from a real localkube over
   HTTP with kubernetes_asyncio (raw JSON, no model deserialization: the fastest honest client) and
   compute capacity from the lists with the same counting code. At 500 nodes / 4,000 GPUs /
   10,000 pods, a size localkube holds comfortably. localkube runs in-process with **no
   controllers**: the pods are written into its store bound (``spec.nodeName``) and Running, so no
   kubelet starts 10,000 processes and no scheduler moves them; the API serves them exactly as it
   would serve live pods. Its API server is Python in the same process, so the LIST time includes
   a slower server than kube-apiserver: the "client side only" line (decode + compute from bytes
   already received) is the floor of the baseline even with an infinitely fast server.
3. **Inventory at the baseline size**, on the very objects the baseline listed, for the ratio.

Prints medians and p95s in milliseconds and the ratios; no pass/fail.
"""

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubernetes_asyncio import client, config  # noqa: E402

from crater_hub.kube.caches import WatchCache  # noqa: E402
from crater_hub.kube.inventory import Inventory  # noqa: E402
from crater_hub.localkube import LocalKube  # noqa: E402

MODELS = [  # (product label, memory MiB)
    ("NVIDIA-A100-SXM4-80GB", "81920"),
    ("NVIDIA-H100-80GB-HBM3", "81920"),
    ("NVIDIA-L40S", "46068"),
]
GPUS_PER_NODE = 8


def node_name(i):
    return f"gpu-{i:05d}"


def make_node(i, gpus=GPUS_PER_NODE):
    product, memory = MODELS[i % len(MODELS)]
    resources = {"cpu": "96", "memory": "1024Gi", "nvidia.com/gpu": str(gpus), "pods": "110",
                 "ephemeral-storage": "500Gi"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": node_name(i), "resourceVersion": str(i + 1), "uid": f"node-{i}",
            "labels": {"kubernetes.io/hostname": node_name(i), "kubernetes.io/os": "linux",
                       "nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": product,
                       "nvidia.com/gpu.memory": memory, "nvidia.com/gpu.count": str(gpus)},
        },
        "spec": {},
        "status": {
            "capacity": resources, "allocatable": resources,
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory"},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure"},
                {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "lastHeartbeatTime": "2025-01-01T00:00:00Z"},
            ],
            "nodeInfo": {"kubeletVersion": "v1.31.0", "architecture": "amd64"},
        },
    }


def make_pod(i, node, gpus, phase="Running", rv=None):
    limits = {"cpu": "8", "memory": "64Gi"}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": f"pod-{i:06d}", "namespace": f"team-{i % 50}", "uid": f"pod-{i}",
            "resourceVersion": str(rv or 100000 + i),
            "labels": {"app": "train", "component": "worker", "crater.io/owner": f"user-{i % 997}"},
        },
        "spec": {
            "nodeName": node, "restartPolicy": "OnFailure",
            "containers": [
                {"name": "main", "image": "nvcr.io/nvidia/pytorch:24.05-py3",
                 "command": ["python", "train.py"],
                 "resources": {"requests": {"cpu": "2", "memory": "16Gi"}, "limits": limits}},
                {"name": "sidecar", "image": "busybox:1.36",
                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
            ],
        },
        "status": {
            "phase": phase, "podIP": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
            "conditions": [{"type": "Ready", "status": "True" if phase == "Running" else "False"}],
        },
    }


def synthetic_pods(n_pods, n_nodes, seed=1):
    """Pods spread over the nodes: a quarter hold 1-2 GPUs, some finished, the rest CPU only."""
    rng = random.Random(seed)
    per_node_gpus = [0] * n_nodes
    for i in range(n_pods):
        node = i % n_nodes
        gpus = 0
        if i % 4 == 0 and per_node_gpus[node] < GPUS_PER_NODE - 1:
            gpus = rng.choice((1, 1, 2))
            per_node_gpus[node] += gpus
        phase = "Succeeded" if i % 23 == 0 else "Running"
        yield make_pod(i, node_name(node), gpus, phase)


def stats(samples_ns):
    ms = sorted(s / 1e6 for s in samples_ns)
    return statistics.median(ms), ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]


def fmt(label, samples_ns):
    median, p95 = stats(samples_ns)
    return f"  {label:<52} median {median:9.4f} ms   p95 {p95:9.4f} ms   (n={len(samples_ns)})"


def fed_inventory(nodes, pods):
    """An Inventory on two unstarted caches, filled through their event path."""
    node_cache, pod_cache = WatchCache("nodes"), WatchCache("pods")
    inventory = Inventory(None, node_cache=node_cache, pod_cache=pod_cache)
    for node in nodes:
        node_cache.apply("ADDED", node)
    for pod in pods:
        pod_cache.apply("ADDED", pod)
    return inventory, pod_cache


def time_requests(inventory, pod_cache, nodes, requests, seed=2):
    """Capacity per request: (no change, one pod change between, fits, one event) samples."""
    inventory.capacity()
    unchanged = []
    for _ in range(requests):
        t0 = time.perf_counter_ns()
        inventory.capacity()
        unchanged.append(time.perf_counter_ns() - t0)

    rng = random.Random(seed)
    gpu_pods = [p for p in pod_cache.objects.values()
                if "nvidia.com/gpu" in p["spec"]["containers"][0]["resources"]["limits"]
                and p["status"]["phase"] == "Running"]
    changed, events = [], []
    deleted = []
    for k in range(requests):
        if k % 2 == 0 or not deleted:
            victim = gpu_pods.pop(rng.randrange(len(gpu_pods)))
            deleted.append(victim)
            t0 = time.perf_counter_ns()
            pod_cache.apply("DELETED", victim)
        else:
            back = deleted.pop()
            back = {**back, "spec": {**back["spec"], "nodeName": rng.choice(nodes)}}
            gpu_pods.append(back)
            t0 = time.perf_counter_ns()
            pod_cache.apply("ADDED", back)
        events.append(time.perf_counter_ns() - t0)
        t0 = time.perf_counter_ns()
        inventory.capacity()
        changed.append(time.perf_counter_ns() - t0)

    fits = []
    slugs = [a.slug for a in inventory.accelerators()]
    for k in range(requests):
        t0 = time.perf_counter_ns()
        inventory.fits(slugs[k % len(slugs)], 1 + k % 8)
        fits.append(time.perf_counter_ns() - t0)
    return unchanged, changed, fits, events


class BareLocalKube(LocalKube):
    """localkube's API and store without controllers: nothing runs or moves the pods."""

    def _make_controllers(self):
        return []


async def baseline(n_nodes, n_pods, requests, workdir):
    cluster = {"nodes": [{"name": node_name(i), "capacity": {"cpu": "96", "memory": "1024Gi",
                                                             "nvidia.com/gpu": GPUS_PER_NODE},
                          "labels": make_node(i)["metadata"]["labels"]} for i in range(n_nodes)]}
    cluster_file = Path(workdir) / "cluster.yaml"
    cluster_file.write_text(yaml.safe_dump(cluster))
    lk = BareLocalKube(cluster_file=cluster_file, state_dir=Path(workdir) / "state")
    await lk.start()
    t0 = time.perf_counter()
    pod_res = lk.registry.lookup("", "v1", "pods")
    ns_res = lk.registry.lookup("", "v1", "namespaces")
    for t in range(50):
        lk.store.create(ns_res, {"metadata": {"name": f"team-{t}"}})
    for pod in synthetic_pods(n_pods, n_nodes):
        status = pod.pop("status")
        for key in ("resourceVersion", "uid"):
            pod["metadata"].pop(key)
        created = lk.store.create(pod_res, pod)
        meta = created["metadata"]
        lk.store.mutate(pod_res, meta["namespace"], meta["name"],
                        lambda p, s=status: p["status"].update(s), subresource="status")
    print(f"  (localkube filled in {time.perf_counter() - t0:.1f} s)")
    path = lk.write_kubeconfig(Path(workdir) / "kubeconfig")
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(path), client_configuration=cfg)
    api = client.ApiClient(cfg)
    core = client.CoreV1Api(api)

    async def fetch():
        bodies = []
        for call in (core.list_node, core.list_pod_for_all_namespaces):
            response = await call(_preload_content=False)
            bodies.append(await response.read())
            response.release()
        return bodies

    def compute(bodies):
        node_list, pod_list = (json.loads(b) for b in bodies)
        inventory, _ = fed_inventory(node_list["items"], pod_list["items"])
        return inventory.capacity()

    try:
        await fetch()  # warm the connection
        full, client_only = [], []
        for _ in range(requests):
            t0 = time.perf_counter_ns()
            bodies = await fetch()
            capacity = compute(bodies)
            full.append(time.perf_counter_ns() - t0)
        for _ in range(requests):
            t0 = time.perf_counter_ns()
            compute(bodies)
            client_only.append(time.perf_counter_ns() - t0)
        node_list, pod_list = (json.loads(b) for b in bodies)
    finally:
        await api.close()
        await lk.stop()
    return full, client_only, capacity, node_list["items"], pod_list["items"], len(bodies[1])


def describe(capacity):
    accs = capacity["accelerators"]
    return (f"{len(capacity['nodes'])} nodes, " + ", ".join(
        f"{a['slug']} {a['free']}/{a['total']} free" for a in accs))


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=100000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--baseline-nodes", type=int, default=500)
    parser.add_argument("--baseline-pods", type=int, default=10000)
    parser.add_argument("--baseline-requests", type=int, default=10)
    args = parser.parse_args()

    print(f"Inventory at scale: {args.nodes} nodes / {args.nodes * GPUS_PER_NODE} GPUs / "
          f"{args.pods} pods, fed through WatchCache.apply")
    nodes = [make_node(i) for i in range(args.nodes)]
    pods = list(synthetic_pods(args.pods, args.nodes))
    t0 = time.perf_counter()
    inventory, pod_cache = fed_inventory(nodes, pods)
    fill = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = inventory.capacity()
    print(f"  fill {fill:.2f} s ({1e6 * fill / (args.nodes + args.pods):.1f} µs per event); "
          f"first capacity() {1000 * (time.perf_counter() - t0):.1f} ms (discovery, all nodes); "
          f"{describe(first)}")
    names = [n["metadata"]["name"] for n in nodes]
    unchanged, changed, fits, events = time_requests(inventory, pod_cache, names, args.requests)
    print(fmt("capacity(), nothing changed", unchanged))
    print(fmt("capacity(), one pod change before each request", changed))
    print(fmt("fits(slug, count)", fits))
    print(fmt("one pod event (WatchCache.apply + listeners)", events))
    big_changed = stats(changed)[0]
    node_cache, reshaped = inventory.node_cache, []
    for k in range(100):  # a node joins or leaves (autoscaling): the node lists re-sort
        extra = make_node(args.nodes + k // 2)
        node_cache.apply("ADDED" if k % 2 == 0 else "DELETED", extra)
        t0 = time.perf_counter_ns()
        inventory.capacity()
        reshaped.append(time.perf_counter_ns() - t0)
    print(fmt("capacity(), a node added or removed before each", reshaped))
    serialized = []
    victim = next(p for p in pod_cache.objects.values() if p["status"]["phase"] == "Running")
    for k in range(50):  # what a REST answer costs: the snapshot as JSON text
        pod_cache.apply("DELETED" if k % 2 == 0 else "ADDED", victim)
        t0 = time.perf_counter_ns()
        text = inventory.capacity_json()
        serialized.append(time.perf_counter_ns() - t0)
    print(fmt(f"capacity_json() ({len(text) / 2**20:.1f} MiB), one pod change before each",
              serialized))
    summaries = []
    for k in range(1000):
        pod_cache.apply("DELETED" if k % 2 == 0 else "ADDED", victim)
        t0 = time.perf_counter_ns()
        json.dumps(inventory.capacity(detail=False))
        summaries.append(time.perf_counter_ns() - t0)
    print(fmt("json.dumps(capacity(detail=False)), one pod change each", summaries))
    fresh, _ = fed_inventory(nodes, pod_cache.objects.values())
    assert fresh.capacity()["accelerators"] == inventory.capacity()["accelerators"], \
        "incremental and from-scratch capacity differ"
    print("  after the changes, the incremental capacity equals one computed from scratch")
    del inventory, pod_cache, fresh, nodes, pods, first
    gc.collect()

    print(f"\nBaseline: LIST per request from localkube over HTTP, {args.baseline_nodes} nodes / "
          f"{args.baseline_nodes * GPUS_PER_NODE} GPUs / {args.baseline_pods} pods")
    with tempfile.TemporaryDirectory(prefix="capacity-bench-") as workdir:
        full, client_only, capacity, listed_nodes, listed_pods, pod_bytes = await baseline(
            args.baseline_nodes, args.baseline_pods, args.baseline_requests, workdir)
    print(f"  pods list: {pod_bytes / 2**20:.1f} MiB of JSON; {describe(capacity)}")
    print(fmt("LIST nodes + pods, decode, compute", full))
    print(fmt("client side only: decode + compute", client_only))

    print("\nInventory at the baseline size (the same objects, fed through WatchCache.apply)")
    small, small_cache = fed_inventory(listed_nodes, listed_pods)
    assert small.capacity()["accelerators"] == capacity["accelerators"], "same answer as baseline"
    s_unchanged, s_changed, _, _ = time_requests(small, small_cache, [
        n["metadata"]["name"] for n in listed_nodes], args.requests)
    print(fmt("capacity(), nothing changed", s_unchanged))
    print(fmt("capacity(), one pod change before each request", s_changed))

    base_full, base_client = stats(full)[0], stats(client_only)[0]
    ours_unchanged, ours_changed = stats(s_unchanged)[0], stats(s_changed)[0]
    print("\nSummary (medians)")
    print(f"  at {args.nodes} nodes / {args.pods} pods, one change per request: "
          f"{big_changed:.3f} ms (target <= 10 ms)")
    print(f"  at {args.baseline_nodes} nodes / {args.baseline_pods} pods, Inventory vs per-request "
          f"LIST (target >= 100x):")
    print(f"    one change per request:  {base_full / ours_changed:10.0f}x faster than LIST, "
          f"{base_client / ours_changed:8.0f}x faster than its client side alone")
    print(f"    nothing changed:         {base_full / ours_unchanged:10.0f}x faster than LIST, "
          f"{base_client / ours_unchanged:8.0f}x faster than its client side alone")


if __name__ == "__main__":
    asyncio.run(main())
