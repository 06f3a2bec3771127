"""The GPU heatmap REST answer per request: shared caches + one utilization snapshot per scrape
interval, against a per-request LIST + PromQL implementation, in the same run.

    .venv/bin/python benchmarks/gpu_heatmap.py [--nodes 5000 --baseline-nodes 500 --requests 300]

1. **Ours at scale.** 5,000 nodes × 8 GPUs (40,000 GPUs, three models) and their GPU pods (about
   3 in 4 GPUs held, by user servers, crater jobs and external pods; no device ids on the pods, as
   on a real cluster: holders come from the DCGM ``pod`` labels) are fed through the caches' event
   path (``WatchCache.apply``, what the watch runs). Utilization for all 40,000 GPUs comes from
   :class:`crater_hub.gpus.utilization.UtilizationCache` over the real Prometheus HTTP client,
   asking a stand-in Prometheus (an in-process tornado server answering ``/api/v1/query`` in
   Prometheus's JSON format with four DCGM series per GPU — the answer a real Prometheus gives;
   running a real one with 160,000 scraped series is beyond this 2-core machine) once per scrape
   interval. A request is what ``GET /hub/api/crater/gpus`` does after authentication: the
   snapshot (shared), the page of 100 node rows, the accelerator summaries and ``json.dumps``.
   Timed with nothing changed, with one pod event before each request, and the once-per-interval
   cost of a new snapshot (query + parse + the join of every node). The caches' API object counts
   calls: 0 Kubernetes calls per request is measured, not assumed.
2. **Baseline (what Genet does).** Per request: LIST nodes and pods from a real localkube over
   HTTP (raw JSON), one PromQL query to the stand-in Prometheus, then the same join from scratch
   and the same answer. At 500 nodes / 4,000 GPUs (localkube holds that comfortably; see
   benchmarks/capacity.py for why the server runs without controllers).
3. **Ours at the baseline size**, on the very objects the baseline listed, for the ratio.

Prints medians and p95s in milliseconds and the ratios; no pass/fail.
"""

import argparse
import asyncio
import gc
import json
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubernetes_asyncio import client, config  # noqa: E402
from tornado import web  # noqa: E402
from tornado.httpserver import HTTPServer  # noqa: E402

from benchmarks.capacity import stats  # noqa: E402
from crater_hub.accelerators import discover  # noqa: E402
from crater_hub.gpus.devices import DeviceIndex  # noqa: E402
from crater_hub.gpus.heatmap import Heatmap, parse_filters, visible_rows  # noqa: E402
from crater_hub.gpus.prometheus import Prometheus  # noqa: E402
from crater_hub.gpus.utilization import (  # noqa: E402
    UtilizationCache,
    UtilizationSnapshot,
    samples_from_series,
)
from crater_hub.kube.caches import WatchCache  # noqa: E402
from crater_hub.localkube import LocalKube  # noqa: E402

MODELS = [("NVIDIA-A100-SXM4-80GB", "81920"), ("NVIDIA-H100-80GB-HBM3", "81920"),
          ("NVIDIA-L40S", "46068")]
GPUS = 8
PAGE_ROWS = 100


def node_name(i):
    return f"gpu-{i:05d}"


def make_node(i):
    product, memory = MODELS[i % len(MODELS)]
    res = {"cpu": "96", "memory": "1024Gi", "nvidia.com/gpu": str(GPUS), "pods": "110"}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node_name(i), "resourceVersion": str(i + 1), "uid": f"n-{i}",
                         "labels": {"kubernetes.io/hostname": node_name(i),
                                    "nvidia.com/gpu.present": "true",
                                    "nvidia.com/gpu.product": product,
                                    "nvidia.com/gpu.memory": memory,
                                    "nvidia.com/gpu.count": str(GPUS)}},
            "spec": {},
            "status": {"capacity": res, "allocatable": res,
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def make_pod(k, node, gpus, kind):
    user = f"user-{k % 997}"
    labels, annotations, ns = {}, {}, "jhub"
    if kind == "server":
        labels = {"component": "singleuser-server", "hub.jupyter.org/username": user,
                  "app": "jupyterhub"}
        annotations = {"hub.jupyter.org/username": user}
        name = f"jupyter-{user}-{k}"
    elif kind == "job":
        labels = {"app.kubernetes.io/managed-by": "crater-hub", "crater.io/kind": "job",
                  "crater.io/job-id": str(k), "crater.io/owner": user}
        annotations = {"crater.io/owner-name": user}
        name = f"crater-job-{k}-x"
    else:
        labels = {"app": "trainer"}
        ns, name = f"team-{k % 20}", f"trainer-{k}"
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": f"p-{k}",
                         "resourceVersion": str(100000 + k), "labels": labels,
                         "annotations": annotations},
            "spec": {"nodeName": node, "containers": [
                {"name": "main", "image": "pytorch",
                 "resources": {"requests": {"cpu": "4", "memory": "32Gi"},
                               "limits": {"nvidia.com/gpu": str(gpus)}}}]},
            "status": {"phase": "Running"}}


def cluster(n_nodes, seed=1):
    """Nodes, GPU pods and which GPUs each pod holds (for the DCGM pod labels)."""
    rng = random.Random(seed)
    nodes = [make_node(i) for i in range(n_nodes)]
    pods, holders, k = [], {}, 0
    for i in range(n_nodes):
        free = list(range(GPUS))
        while len(free) > 2:
            gpus = rng.choice((1, 1, 2))
            kind = rng.choice(("server", "job", "job", "external"))
            pod = make_pod(k, node_name(i), gpus, kind)
            k += 1
            pods.append(pod)
            for _ in range(gpus):
                holders[(node_name(i), str(free.pop(0)))] = (pod["metadata"]["namespace"],
                                                             pod["metadata"]["name"])
    return nodes, pods, holders


def prometheus_answer(n_nodes, holders, seed=2):
    """The JSON body of Prometheus's answer to the snapshot query: 4 DCGM series per GPU."""
    rng = random.Random(seed)
    result = []
    now = time.time()
    for i in range(n_nodes):
        node = node_name(i)
        product = MODELS[i % len(MODELS)][0]
        for g in range(GPUS):
            base = {"gpu": str(g), "UUID": f"GPU-{i:05d}-{g}", "device": f"nvidia{g}",
                    "modelName": product, "Hostname": node}
            holder = holders.get((node, str(g)))
            if holder:
                base.update({"namespace": holder[0], "pod": holder[1], "container": "main"})
            busy = rng.random() if holder else 0.0
            if holder and rng.random() < 0.2:
                busy = 0.0  # allocated but idle
            used = int(busy * 60000) + (500 if holder else 0)
            for name, value in (("DCGM_FI_DEV_GPU_UTIL", busy * 100),
                                ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", busy),
                                ("DCGM_FI_DEV_FB_USED", used),
                                ("DCGM_FI_DEV_FB_FREE", 81920 - used)):
                result.append({"metric": {"__name__": name, **base}, "value": [now, str(value)]})
    return json.dumps({"status": "success",
                       "data": {"resultType": "vector", "result": result}}).encode()


class FakePrometheus(web.RequestHandler):
    def post(self):
        self.application.settings["queries"].append(self.get_body_argument("query"))
        self.set_header("Content-Type", "application/json")
        self.write(self.application.settings["body"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def stand_in_prometheus(body):
    queries = []
    app = web.Application([(r"/api/v1/query", FakePrometheus)], body=body, queries=queries)
    port = free_port()
    server = HTTPServer(app, max_body_size=1 << 30, max_buffer_size=1 << 30)
    server.listen(port, "127.0.0.1")
    return server, f"http://127.0.0.1:{port}", queries


class CountingApi:
    """Stands where the caches' Kubernetes API object would be: every call counted."""

    def __init__(self):
        self.calls = 0

    def __getattr__(self, name):
        self.calls += 1
        raise AssertionError(f"Kubernetes API call {name} during a request")


def fed(nodes, pods, api=None):
    api = api or CountingApi()
    nc, pc = WatchCache("nodes", api=api), WatchCache("pods", api=api)
    index = DeviceIndex(node_cache=nc, pod_cache=pc)
    for n in nodes:
        nc.apply("ADDED", n)
    for p in pods:
        pc.apply("ADDED", p)
    return index, nc, pc, api


def accelerators_of(nodes):
    seen, reps = set(), []
    for n in nodes:
        product = n["metadata"]["labels"]["nvidia.com/gpu.product"]
        if product not in seen:
            seen.add(product)
            reps.append(n)
    found = discover(reps)
    return lambda: found


def answer(heatmap, snapshot, filters, viewer="user-1"):
    """What GET /hub/api/crater/gpus serializes (crater_hub.handlers.gpus.GPUData.answer)."""
    rows, total = heatmap.page(snapshot, filters)
    rows = visible_rows(rows, viewer, show_names=True)
    return json.dumps({"utilization": {"available": snapshot.error is None},
                       "accelerators": heatmap.summary(snapshot), "devices": rows,
                       "total_rows": total, "offset": filters.offset, "limit": filters.limit})


def fmt(label, ns):
    median, p95 = stats(ns)
    return f"  {label:<60} median {median:9.3f} ms   p95 {p95:9.3f} ms   (n={len(ns)})"


async def ours(nodes, pods, url, requests, label):
    index, nc, pc, api = fed(nodes, pods)
    accs = accelerators_of(nodes)
    models = [a.model() for a in accs()]
    cache = UtilizationCache(Prometheus(url, timeout=120), interval=3600)
    heatmap = Heatmap(index, accs, threshold=0.05, window=0)
    t0 = time.perf_counter_ns()
    snapshot = await cache.snapshot()
    query_ns = time.perf_counter_ns() - t0
    assert snapshot.error is None, snapshot.error
    t0 = time.perf_counter_ns()
    first = answer(heatmap, snapshot, parse_filters({"limit": str(PAGE_ROWS)}, models))
    join_ns = time.perf_counter_ns() - t0
    print(f"  {label}: {len(index.nodes())} nodes, {len(heatmap.rows(snapshot))} device rows, "
          f"{len(snapshot.samples)} GPUs with utilization; first answer {len(first) / 1024:.0f} KiB")
    print(f"  once per scrape interval: Prometheus query + parse {query_ns / 1e6:.0f} ms; "
          f"first join (index build, classification, every node) {join_ns / 1e6:.0f} ms")
    filter_sets = [{}, {"idle": "true"}, {"accelerator": models[1]["slug"]}, {"node": "gpu-0012"},
                   {"offset": "300"}]
    unchanged, changed = [], []
    calls_before, queries_before = api.calls, cache.queries
    for k in range(requests):
        filters = parse_filters({"limit": str(PAGE_ROWS), **filter_sets[k % len(filter_sets)]}, models)
        t0 = time.perf_counter_ns()
        snap = await cache.snapshot()
        answer(heatmap, snap, filters)
        unchanged.append(time.perf_counter_ns() - t0)
    rng = random.Random(3)
    for k in range(requests):
        victim = pods[rng.randrange(len(pods))]
        pc.apply("DELETED", victim)
        pc.apply("ADDED", victim)  # the pod leaves and comes back: its node is rejoined
        filters = parse_filters({"limit": str(PAGE_ROWS), **filter_sets[k % len(filter_sets)]}, models)
        t0 = time.perf_counter_ns()
        snap = await cache.snapshot()
        answer(heatmap, snap, filters)
        changed.append(time.perf_counter_ns() - t0)
    calls = api.calls - calls_before
    rejoin = []
    for _ in range(5):  # the next scrape interval: same devices, new numbers, every node rejoined
        fresh = UtilizationSnapshot(time.time(), snapshot.samples, None)
        t0 = time.perf_counter_ns()
        answer(heatmap, fresh, parse_filters({"limit": str(PAGE_ROWS)}, models))
        rejoin.append(time.perf_counter_ns() - t0)
    print(fmt("REST answer, nothing changed", unchanged))
    print(fmt("REST answer, one pod event before each", changed))
    print(fmt("first answer after a new snapshot (once per scrape interval)", rejoin))
    print(f"  Kubernetes API calls during {2 * requests} requests: {calls}; Prometheus queries: "
          f"{cache.queries - queries_before}")
    return unchanged, changed, query_ns, stats(rejoin)[0] * 1e6


class BareLocalKube(LocalKube):
    def _make_controllers(self):
        return []


async def baseline(nodes, pods, url, requests, workdir):
    n_nodes = len(nodes)
    spec = {"nodes": [{"name": n["metadata"]["name"],
                       "capacity": {"cpu": "96", "memory": "1024Gi", "nvidia.com/gpu": GPUS},
                       "labels": n["metadata"]["labels"]} for n in nodes]}
    path = Path(workdir) / "cluster.yaml"
    path.write_text(yaml.safe_dump(spec))
    lk = BareLocalKube(cluster_file=path, state_dir=Path(workdir) / "state")
    await lk.start()
    pod_res = lk.registry.lookup("", "v1", "pods")
    ns_res = lk.registry.lookup("", "v1", "namespaces")
    for ns in sorted({p["metadata"]["namespace"] for p in pods}):
        lk.store.create(ns_res, {"metadata": {"name": ns}})
    for pod in pods:
        pod = json.loads(json.dumps(pod))
        status = pod.pop("status")
        for key in ("resourceVersion", "uid"):
            pod["metadata"].pop(key)
        created = lk.store.create(pod_res, pod)
        meta = created["metadata"]
        lk.store.mutate(pod_res, meta["namespace"], meta["name"],
                        lambda p, s=status: p["status"].update(s), subresource="status")
    kubeconfig = lk.write_kubeconfig(Path(workdir) / "kubeconfig")
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    api = client.ApiClient(cfg)
    core = client.CoreV1Api(api)
    prom = Prometheus(url, timeout=120)
    from crater_hub.gpus.utilization import SNAPSHOT_QUERY

    async def per_request(filters_args):
        bodies = []
        for call in (core.list_node, core.list_pod_for_all_namespaces):
            response = await call(_preload_content=False)
            bodies.append(await response.read())
            response.release()
        series = await prom.query(SNAPSHOT_QUERY)
        node_list, pod_list = (json.loads(b) for b in bodies)
        snapshot = UtilizationSnapshot(time.time(), samples_from_series(series), None)
        index, _, _, _ = fed(node_list["items"], pod_list["items"])
        accs = accelerators_of(node_list["items"])
        heatmap = Heatmap(index, accs, threshold=0.05, window=0)
        models = [a.model() for a in accs()]
        return answer(heatmap, snapshot, parse_filters({"limit": str(PAGE_ROWS), **filters_args}, models)), \
            node_list["items"], pod_list["items"]

    try:
        await per_request({})  # warm the connections
        full = []
        for _ in range(requests):
            t0 = time.perf_counter_ns()
            text, listed_nodes, listed_pods = await per_request({})
            full.append(time.perf_counter_ns() - t0)
        # the caches, started against the same localkube: what a request costs them in API calls
        nc, pc = WatchCache("nodes", api=core), WatchCache("pods", api=core)
        await nc.ready(60)
        await pc.ready(60)
        lists_before = nc.stats["lists"] + pc.stats["lists"]
        index = DeviceIndex(node_cache=nc, pod_cache=pc)
        cache = UtilizationCache(prom, interval=3600)
        accs = accelerators_of(list(nc.objects.values()))
        heatmap = Heatmap(index, accs, threshold=0.05, window=0)
        models = [a.model() for a in accs()]
        live = []
        for _ in range(requests):
            t0 = time.perf_counter_ns()
            snap = await cache.snapshot()
            answer(heatmap, snap, parse_filters({"limit": str(PAGE_ROWS)}, models))
            live.append(time.perf_counter_ns() - t0)
        lists = nc.stats["lists"] + pc.stats["lists"] - lists_before
        await nc.stop()
        await pc.stop()
    finally:
        await api.close()
        await lk.stop()
    print(f"  {n_nodes} nodes, {len(listed_pods)} pods listed per request")
    print(fmt("LIST nodes + pods, PromQL query, join, answer", full))
    print(fmt("ours on live watch caches of the same localkube", live))
    print(f"  LISTs the live caches made during {requests} requests: {lists}")
    return full, listed_nodes, listed_pods, text


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--baseline-nodes", type=int, default=500)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--baseline-requests", type=int, default=10)
    args = parser.parse_args()

    print(f"Ours at scale: {args.nodes} nodes / {args.nodes * GPUS} GPUs, fed through WatchCache.apply")
    nodes, pods, holders = cluster(args.nodes)
    server, url, queries = await stand_in_prometheus(prometheus_answer(args.nodes, holders))
    big_unchanged, big_changed, big_query, big_join = await ours(nodes, pods, url, args.requests,
                                                                 "5,000-node cluster")
    server.stop()
    del nodes, pods, holders
    gc.collect()

    print(f"\nBaseline: per request LIST + PromQL, {args.baseline_nodes} nodes / "
          f"{args.baseline_nodes * GPUS} GPUs")
    nodes, pods, holders = cluster(args.baseline_nodes)
    server, url, queries = await stand_in_prometheus(prometheus_answer(args.baseline_nodes, holders))
    with tempfile.TemporaryDirectory(prefix="heatmap-bench-") as workdir:
        full, listed_nodes, listed_pods, text = await baseline(
            nodes, pods, url, args.baseline_requests, workdir)
    print(f"\nOurs at the baseline size ({args.baseline_nodes} nodes, the objects the baseline listed)")
    small_unchanged, small_changed, _, _ = await ours(listed_nodes, listed_pods, url, args.requests,
                                                      "baseline-size cluster")
    server.stop()

    b = stats(full)[0]
    print("\nSummary (medians)")
    print(f"  {args.nodes} nodes / {args.nodes * GPUS} GPUs: REST answer {stats(big_unchanged)[0]:.2f} ms "
          f"unchanged, {stats(big_changed)[0]:.2f} ms with a pod event before each (target <= 50 ms); "
          f"p95 {stats(big_changed)[1]:.2f} ms; 0 Kubernetes calls per request")
    print(f"  once per scrape interval at that size: query + parse {big_query / 1e6:.0f} ms, then "
          f"the first answer rejoins every node: {big_join / 1e6:.0f} ms (shared by every viewer)")
    print(f"  {args.baseline_nodes} nodes: per-request LIST + PromQL {b:.1f} ms vs ours "
          f"{stats(small_unchanged)[0]:.3f} ms unchanged ({b / stats(small_unchanged)[0]:.0f}x), "
          f"{stats(small_changed)[0]:.3f} ms with a pod event ({b / stats(small_changed)[0]:.0f}x)")


if __name__ == "__main__":
    asyncio.run(main())
