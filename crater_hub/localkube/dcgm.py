"""A DCGM exporter per node: the simulated GPUs' metrics, as NVIDIA's dcgm-exporter serves them.

On a real cluster dcgm-exporter runs on every GPU node (port 9400) and Prometheus scrapes it.
Here each node's exporter answers at the API server's node proxy path
``/api/v1/nodes/<node>:9400/proxy/metrics`` — one endpoint per node, in the exporter's text
format, with its metric names and labels:

- ``DCGM_FI_DEV_GPU_UTIL`` (%), ``DCGM_FI_PROF_GR_ENGINE_ACTIVE`` (ratio), ``DCGM_FI_DEV_FB_USED``
  and ``DCGM_FI_DEV_FB_FREE`` (MiB);
- labels ``gpu``, ``UUID``, ``device`` ("nvidia0"), ``modelName``, ``Hostname``, and for an
  assigned device the holder's ``container``, ``namespace``, ``pod`` (the exporter's Kubernetes
  mapping); a time-sliced GPU held by several pods repeats its series once per pod;
- MIG instances are series of their own with ``GPU_I_ID`` and ``GPU_I_PROFILE``, GPU_UTIL 0 (as on
  real MIG) and the load in GR_ENGINE_ACTIVE.

What the numbers follow: a device's utilization is the CPU its pod's processes burn (cores, over
the time since the previous reading, at most 1): an idle notebook reads 0, a busy loop ~1. A
time-sliced GPU adds up its pods. Memory used is the pod's resident memory, shared out over its
devices, at most the device's memory. The pod annotation :data:`PIN_ANNOTATION`
(``"0.9"``) pins a pod's devices to that utilization, for tests and demos.
"""

import asyncio
import json
import math
import os
import re
import time
import uuid

from .devices import DEVICES_ANNOTATION, MIG_PREFIX, physical
from .sandbox import sandbox_dir

PIN_ANNOTATION = "localkube.crater.io/gpu-utilization"
MARKER = b"LOCALKUBE_CONTAINER="
MIN_WINDOW = 1.0  # seconds: readings closer together reuse the last rates
DEFAULT_MEMORY_MIB = 16384
TERMINAL = ("Succeeded", "Failed")

METRICS = (
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %)."),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB)."),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB)."),
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "Ratio of time the graphics engine is active."),
)
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _scan(prefixes):
    """``{prefix: (cpu_seconds, rss_bytes)}`` over the processes whose container marker starts
    with one of ``prefixes`` (what a cgroup's cpuacct and memory counters give a real runtime).
    Blocking: a /proc scan."""
    out = {p: [0.0, 0] for p in prefixes}
    if not prefixes:
        return {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read()
            start = environ.find(MARKER)
            if start < 0:
                continue
            end = environ.find(b"\0", start)
            marker = environ[start + len(MARKER): end if end >= 0 else None].decode(errors="replace")
            owner = next((p for p in prefixes if marker.startswith(p)), None)
            if owner is None:
                continue
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry.name}/statm") as f:
                rss_pages = int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile, or not ours to read
        # utime, stime, cutime, cstime: the 14th-17th fields, 12th-15th after "(comm)"
        ticks = sum(int(v) for v in fields[11:15])
        out[owner][0] += ticks / _CLK_TCK
        out[owner][1] += rss_pages * _PAGE
    return {p: (cpu, rss) for p, (cpu, rss) in out.items()}


class PodUsage:
    """CPU rate (cores) and resident memory per pod, read from /proc at most once per
    :data:`MIN_WINDOW`, so that every node's exporter shares one scan."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._previous = {}  # prefix -> (t, cpu_seconds)
        self._latest = {}  # prefix -> (cores, rss_bytes)
        self._read_at = None
        self._lock = asyncio.Lock()

    async def read(self, prefixes):
        """``{prefix: (cores, rss_bytes)}``; a pod's rate is over at least MIN_WINDOW seconds
        (0 at its first reading)."""
        async with self._lock:
            now = self.clock()
            fresh = self._read_at is not None and now - self._read_at < MIN_WINDOW
            if not (fresh and set(prefixes) <= set(self._latest)):
                totals = await asyncio.to_thread(_scan, sorted(set(prefixes)))
                for prefix, (cpu, rss) in totals.items():
                    before = self._previous.get(prefix)
                    cores = self._latest.get(prefix, (0.0, 0))[0]
                    if before is None or now - before[0] >= MIN_WINDOW:
                        if before is not None:
                            cores = max(cpu - before[1], 0.0) / (now - before[0])
                        self._previous[prefix] = (now, cpu)
                    self._latest[prefix] = (cores, rss)
                for gone in set(self._previous) - set(prefixes):  # pods that ended
                    self._previous.pop(gone, None)
                    self._latest.pop(gone, None)
                self._read_at = now
            return {p: self._latest.get(p, (0.0, 0)) for p in prefixes}


def _gpu_uuid(node, gpu):
    return f"GPU-{uuid.uuid5(uuid.NAMESPACE_URL, f'localkube:gpu:{node}/{gpu}')}"


def _model(labels):
    product = labels.get("nvidia.com/gpu.product", "NVIDIA-GPU").removesuffix("-SHARED")
    return product.replace("-", " ", 1) if product.startswith("NVIDIA-") else product


def _memory_mib(labels, resource):
    """A device's memory: GFD's ``<resource>.memory`` label for MIG, ``nvidia.com/gpu.memory``
    for a GPU; a MIG profile without a label by its name (``1g.10gb`` → 10 GiB)."""
    if resource.startswith(MIG_PREFIX):
        profile = resource[len(MIG_PREFIX):]
        raw = labels.get(f"nvidia.com/mig-{profile}.memory")
        if raw and raw.isdigit():
            return int(raw)
        m = re.search(r"\.(\d+)gb$", profile)
        return int(m.group(1)) * 1024 if m else DEFAULT_MEMORY_MIB
    raw = labels.get("nvidia.com/gpu.memory", "")
    return int(raw) if raw.isdigit() else DEFAULT_MEMORY_MIB


def _pin(pod):
    raw = ((pod["metadata"].get("annotations") or {}).get(PIN_ANNOTATION))
    if raw is None:
        return None
    try:
        return min(max(float(raw), 0.0), 1.0)
    except ValueError:
        return None


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class DcgmExporter:
    """The exporters of every node of one localkube (the store is read, never written)."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.usage = PodUsage()

    def _devices_of(self, node):
        """``{(gpu, instance): {"resource", "holders": [pod]}}``: every NVIDIA device of the node."""
        from .devices import device_ids

        out = {}
        resources = (node.get("status") or {}).get("allocatable") or {}
        for resource in sorted(resources):
            if resource != "nvidia.com/gpu" and not resource.startswith(MIG_PREFIX):
                continue
            for device_id in device_ids(node, resource):
                out.setdefault(physical(device_id), {"resource": resource, "holders": []})
        return out

    async def metrics(self, node_name):
        """The exporter's text for ``node_name``, or None when there is no such node."""
        store, registry = self.cluster.store, self.cluster.registry
        node = store.find(registry.lookup("", "v1", "nodes"), "", node_name)
        if node is None:
            return None
        devices = self._devices_of(node)
        holders, prefixes = [], {}  # prefixes of every GPU pod of the cluster: one shared scan
        state_dir = self.cluster.state_dir.absolute()
        for pod in store.iter_raw(registry.lookup("", "v1", "pods")):
            if not pod["spec"].get("nodeName") or pod.get("status", {}).get("phase") in TERMINAL:
                continue
            raw = (pod["metadata"].get("annotations") or {}).get(DEVICES_ANNOTATION)
            held = [physical(i) for r, ids in (json.loads(raw) if raw else {}).items()
                    if r == "nvidia.com/gpu" or r.startswith(MIG_PREFIX) for i in ids]
            if not held:
                continue
            prefixes[pod["metadata"]["uid"]] = f"{sandbox_dir(state_dir, pod)}/"
            if pod["spec"]["nodeName"] == node_name:
                holders.append((pod, held))
        usage = await self.usage.read(list(prefixes.values()))
        load = {}  # (gpu, instance) -> [utilization, memory MiB]
        for pod, held in holders:
            cores, rss = usage.get(prefixes[pod["metadata"]["uid"]], (0.0, 0))
            pinned = _pin(pod)
            share = rss / len(set(held)) / (1024 * 1024)
            for key in set(held):
                if key not in devices:
                    continue
                devices[key]["holders"].append(pod)
                entry = load.setdefault(key, [0.0, 0.0])
                entry[0] += pinned if pinned is not None else min(cores, 1.0)
                entry[1] += share
        return self._render(node, devices, load)

    def _render(self, node, devices, load):
        name = node["metadata"]["name"]
        labels = node["metadata"].get("labels") or {}
        model = _model(labels)
        rows = {metric: [] for metric, _ in METRICS}
        for (gpu, instance), device in sorted(devices.items(), key=lambda kv: (int(kv[0][0]), int(kv[0][1] or -1))):
            total = _memory_mib(labels, device["resource"])
            util, used = load.get((gpu, instance), (0.0, 0.0))
            util, used = min(util, 1.0), min(math.ceil(used), total)  # any resident byte shows
            base = {"gpu": gpu, "UUID": _gpu_uuid(name, gpu), "device": f"nvidia{gpu}", "modelName": model}
            if instance is not None:
                base["GPU_I_PROFILE"] = device["resource"][len(MIG_PREFIX):]
                base["GPU_I_ID"] = instance
            base["Hostname"] = name
            copies = [
                {**base, "container": pod["spec"]["containers"][0]["name"],
                 "namespace": pod["metadata"]["namespace"], "pod": pod["metadata"]["name"]}
                for pod in sorted(device["holders"], key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]))
            ] or [base]
            values = {
                "DCGM_FI_DEV_GPU_UTIL": 0 if instance is not None else round(util * 100),
                "DCGM_FI_DEV_FB_FREE": total - used,
                "DCGM_FI_DEV_FB_USED": used,
                "DCGM_FI_PROF_GR_ENGINE_ACTIVE": f"{util:.6f}",
            }
            for metric, value in values.items():
                for lab in copies:
                    text = ",".join(f'{k}="{_escape(v)}"' for k, v in lab.items())
                    rows[metric].append(f"{metric}{{{text}}} {value}")
        out = []
        for metric, help_text in METRICS:
            out += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge", *rows[metric]]
        return "\n".join(out) + "\n"
