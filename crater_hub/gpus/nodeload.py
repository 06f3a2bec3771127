"""The node load view: each node's pods, as server / job / Ray / system / external, and what each holds.

Admins use it to answer "why is this node full": a user's notebook, a queued job, a Ray worker,
the platform itself, or something the hub does not manage. :class:`NodeLoad` keeps the pods bound
to each node (a listener on the shared Pod cache, so a request never lists pods) and classifies a
pod with :func:`crater_hub.gpus.workloads.classify` once per version of the pod.
"""

import asyncio
from dataclasses import dataclass

from ..kube.caches import WatchCache, object_key
from ..quantity import format_cpu, format_memory, parse_quantity
from .devices import TERMINAL_PHASES
from .heatmap import FilterError
from .workloads import KINDS, classify, device_requests

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


@dataclass(frozen=True)
class NodeFilters:
    node: str | None = None
    kind: str | None = None
    offset: int = 0
    limit: int = DEFAULT_LIMIT


def parse_filters(args):
    """:class:`NodeFilters` from query arguments; FilterError naming the field."""
    node = args.get("node") or None
    if node is not None and (len(node) > 253 or not all(c.isalnum() or c in ".-" for c in node)):
        raise FilterError("node", "node must be part of a node name: at most 253 characters of "
                          "letters, digits, '.' and '-'")
    kind = args.get("kind") or None
    if kind is not None and kind not in KINDS:
        raise FilterError("kind", f"kind {kind!r} is unknown; allowed: {', '.join(KINDS)}")
    out = {}
    for name, default, high in (("offset", 0, 10**9), ("limit", DEFAULT_LIMIT, MAX_LIMIT)):
        raw = args.get(name)
        if raw in (None, ""):
            out[name] = default
            continue
        try:
            value = int(raw)
        except ValueError:
            value = None
        low = 1 if name == "limit" else 0
        if value is None or not low <= value <= high:
            raise FilterError(name, f"{name} must be an integer from {low} to {high}, got {raw!r}")
        out[name] = value
    return NodeFilters(node.lower() if node else None, kind, out["offset"], out["limit"])


def _holds(pod):
    """CPU, memory and devices the pod requests, as quantity strings / integers."""
    cpu = memory = 0
    for c in (pod.get("spec") or {}).get("containers") or []:
        resources = c.get("resources") or {}
        merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        try:
            cpu += parse_quantity(merged.get("cpu", "0"))
            memory += parse_quantity(merged.get("memory", "0"))
        except (ValueError, TypeError):
            pass
    out = {}
    if cpu:
        out["cpu"] = format_cpu(cpu)
    if memory:
        out["memory"] = format_memory(int(memory))
    out.update(device_requests(pod))
    return out


class NodeLoad:
    """Pods per node, classified, from the shared Node and Pod caches."""

    def __init__(self, system_namespaces=(), *, node_cache=None, pod_cache=None):
        self.system_namespaces = tuple(system_namespaces)
        self.node_cache = node_cache if node_cache is not None else WatchCache.shared("nodes")
        self.pod_cache = pod_cache if pod_cache is not None else WatchCache.shared("pods")
        self._by_node = {}  # node -> {pod key: model}
        self._pod_node = {}
        self._names = None
        self.pod_cache.add_listener(self.on_pod_event)
        self.node_cache.add_listener(self.on_node_event)
        for pod in list(self.pod_cache.objects.values()):
            self.on_pod_event("ADDED", pod, None)

    async def ready(self, timeout=None):
        await self.node_cache.ready(timeout)
        await self.pod_cache.ready(timeout)
        return self

    def on_node_event(self, event_type, node, old):
        if event_type != "MODIFIED":
            self._names = None

    def on_pod_event(self, event_type, pod, old):
        key = object_key(pod)
        previous = self._pod_node.pop(key, None)
        if previous is not None:
            self._by_node.get(previous, {}).pop(key, None)
        node = (pod.get("spec") or {}).get("nodeName")
        phase = (pod.get("status") or {}).get("phase")
        if event_type == "DELETED" or not node or phase in TERMINAL_PHASES:
            return
        w = classify(pod, system_namespaces=self.system_namespaces)
        meta = pod["metadata"]
        self._by_node.setdefault(node, {})[key] = {
            "namespace": meta.get("namespace"), "name": meta["name"], "kind": w.kind,
            "user": w.user, "workload": w.name, "link": w.link, "phase": phase,
            "holds": _holds(pod),
        }
        self._pod_node[key] = node

    def names(self):
        if self._names is None:
            self._names = sorted(self.node_cache.objects)
        return self._names

    def page(self, filters, prefix=""):
        """``{"nodes": [{"name", "pods": [...], "counts": {kind: n}}], "total", "offset",
        "limit"}``; links are prefixed with ``prefix`` (the base URL without its slash)."""
        names = self.names()
        if filters.node:
            names = [n for n in names if filters.node in n.lower()]
        if filters.kind:
            names = [n for n in names
                     if any(p["kind"] == filters.kind for p in self._by_node.get(n, {}).values())]
        out = []
        for name in names[filters.offset:filters.offset + filters.limit]:
            pods = sorted(self._by_node.get(name, {}).values(),
                          key=lambda p: (KINDS.index(p["kind"]), p["namespace"] or "", p["name"]))
            counts = {}
            for p in pods:
                counts[p["kind"]] = counts.get(p["kind"], 0) + 1
            out.append({"name": name, "counts": counts,
                        "pods": [{**p, "link": prefix + p["link"] if p["link"] else None}
                                 for p in pods]})
        return {"nodes": out, "total": len(names), "offset": filters.offset, "limit": filters.limit}


_shared = {}


def shared_node_load(system_namespaces=()):
    """The node load view of the running loop, on the shared caches."""
    loop = asyncio.get_running_loop()
    for key in [k for k in _shared if k[0].is_closed()]:
        del _shared[key]
    key = (loop, tuple(system_namespaces))
    view = _shared.get(key)
    if view is None:
        view = _shared[key] = NodeLoad(system_namespaces)
    return view
