"""Cluster inventory: how many accelerators of each type exist, are in use and are free, right now.

:class:`Inventory` listens to two shared watch caches — Nodes, and Pods in all namespaces — and
keeps, incrementally on every event (never per request):

- per node: allocatable and capacity per resource, readiness and schedulability, and the
  requests of the pods bound to it (``spec.nodeName`` set, phase neither Succeeded nor Failed),
  counted as kube-scheduler counts them (see :func:`pod_requests`). Every pod counts, not only
  notebooks: a batch job or a Ray worker holding a GPU makes it unavailable just the same;
- per accelerator type (the operator's list, or :func:`crater_hub.accelerators.discover` over the
  nodes when the list is empty, re-run when node labels or resources change): total, allocatable,
  in use, free, free per node and the largest block free on one node.

Reading it::

    inventory = shared_inventory(accelerators)   # one per event loop, caches shared too
    await inventory.ready()                      # first LIST of nodes and pods done
    inventory.accelerators()                     # [Accelerator, ...]
    inventory.capacity()                         # JSON-ready dict, see Inventory.capacity
    fit = inventory.fits("a100-sxm4-80gb", 2)    # Fit(fits_now=..., fits_when_empty=..., ...)
    if not fit.fits_now: refuse(fit.message)

Cost: a request when nothing changed returns the memoized snapshot (a dict lookup); after a
change only the nodes that changed are rebuilt, and the per-accelerator sums are adjusted by their
difference, so a recompute costs O(changed nodes) plus copying lists of references, never O(pods).
A node joining or leaving re-sorts the node lists; discovery re-runs (on one node per distinct
model) only when a model appears or disappears. Node heartbeats (status updates that change
neither resources, labels, readiness nor schedulability) and pod updates that do not change what
a pod holds invalidate nothing. Measured by ``benchmarks/capacity.py``.

Free capacity counts only nodes that are Ready and schedulable (not cordoned); total, allocatable
and in use count every node. CPU and memory are reported in Kubernetes quantity strings
(``"12500m"``, ``"64Gi"``); accelerators are whole devices, reported as integers.
"""

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction

from crater_hub import accelerators as catalog

from ..quantity import format_cpu, format_memory, parse_quantity
from .caches import FollowsNodesAndPods, WatchCache, object_key

TERMINAL_PHASES = ("Succeeded", "Failed")

_amounts = {}


def amount(resource, raw):
    """A quantity as the integer the scheduler compares: millicores for ``cpu``, else rounded up.

    Memoized: clusters repeat the same few quantity strings over and over.
    """
    key = (resource == "cpu", raw)
    try:
        return _amounts[key]
    except KeyError:
        pass
    except TypeError:  # unhashable: not a quantity anyway
        raise ValueError(f"invalid quantity {raw!r}") from None
    value = parse_quantity(raw)
    if resource == "cpu":
        value *= 1000
    result = -((-value.numerator) // value.denominator)  # ceil, exactly
    if len(_amounts) < 10000:
        _amounts[key] = result
    return result


_formatted = {}


def _format(resource, value):
    """``cpu`` millicores or memory bytes as a quantity string, memoized (values repeat)."""
    key = (resource, value)
    text = _formatted.get(key)
    if text is None:
        if resource == "cpu":
            text = format_cpu(Fraction(value, 1000))
        else:
            text = format_memory(value)
        if len(_formatted) < 100000:
            _formatted[key] = text
    return text


def tracked(resource):
    """Resources the inventory counts: cpu, memory and extended resources (``vendor/name``)."""
    return resource in ("cpu", "memory") or "/" in resource


def _container_requests(container):
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    out = {}
    for resource, raw in requests.items():
        if tracked(resource):
            out[resource] = amount(resource, raw)
    # Without a request, the API server defaults the request to the limit (extended resources
    # may only be given as limits); count the limit as the request.
    for resource, raw in limits.items():
        if resource not in requests and tracked(resource):
            out[resource] = amount(resource, raw)
    return out


def pod_requests(pod):
    """What a pod holds on its node, ``{resource: int}``, the way kube-scheduler sums it.

    The app containers' requests are summed (a missing request counts as the limit), sidecar init
    containers (``restartPolicy: Always``) are added to that sum, each ordinary init container needs
    its own request plus the sidecars started before it, and the pod holds the larger of the two,
    plus ``spec.overhead``. cpu is in millicores, memory in bytes, extended resources in units.
    """
    spec = pod.get("spec") or {}
    total = {}
    for container in spec.get("containers") or ():
        for resource, value in _container_requests(container).items():
            total[resource] = total.get(resource, 0) + value
    init_peak = {}
    sidecars = {}
    for container in spec.get("initContainers") or ():
        requests = _container_requests(container)
        if container.get("restartPolicy") == "Always":
            for resource, value in requests.items():
                sidecars[resource] = sidecars.get(resource, 0) + value
                total[resource] = total.get(resource, 0) + value
        else:
            for resource, value in requests.items():
                need = value + sidecars.get(resource, 0)
                if need > init_peak.get(resource, 0):
                    init_peak[resource] = need
    for resource, need in init_peak.items():
        if need > total.get(resource, 0):
            total[resource] = need
    for resource, raw in (spec.get("overhead") or {}).items():
        if tracked(resource):
            total[resource] = total.get(resource, 0) + amount(resource, raw)
    return {resource: value for resource, value in total.items() if value}


def holds_resources(pod):
    """Whether a pod holds its requests on a node: bound, and neither Succeeded nor Failed."""
    return bool((pod.get("spec") or {}).get("nodeName")) and (
        (pod.get("status") or {}).get("phase") not in TERMINAL_PHASES
    )


@dataclass(frozen=True)
class NodeState:
    """What the inventory keeps of a Node; two equal states need no recompute (heartbeats)."""

    name: str
    labels: dict
    capacity: dict  # resource -> int (cpu in millicores)
    allocatable: dict
    raw_allocatable: dict  # as the API sent it, for discovery
    ready: bool
    schedulable: bool

    @classmethod
    def from_node(cls, node):
        meta = node["metadata"]
        status = node.get("status") or {}
        conditions = status.get("conditions") or ()
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        raw_allocatable = status.get("allocatable") or {}
        capacity = status.get("capacity") or raw_allocatable

        def ints(mapping):
            out = {}
            for resource, raw in mapping.items():
                if tracked(resource):
                    try:
                        out[resource] = amount(resource, raw)
                    except ValueError:
                        continue
            return out

        return cls(
            name=meta["name"],
            labels=dict(meta.get("labels") or {}),
            capacity=ints(capacity),
            allocatable=ints(raw_allocatable),
            raw_allocatable=dict(raw_allocatable),
            ready=ready,
            schedulable=not (node.get("spec") or {}).get("unschedulable"),
        )

    def as_node(self):
        """A minimal Node dict (labels, allocatable), what :func:`discover` reads."""
        return {"metadata": {"name": self.name, "labels": self.labels},
                "status": {"allocatable": self.raw_allocatable}}

    def discovery_signature(self):
        """Nodes with equal signatures yield the same :func:`discover` result."""
        labels = catalog.discovery_labels(self.labels)
        resources = tuple(sorted((r, str(v) in ("0", "")) for r, v in self.raw_allocatable.items()
                                 if "/" in r))
        return labels, resources

    def structure(self):
        """What decides which accelerators the node offers (and discovery finds on it)."""
        return self.labels, frozenset(self.allocatable), self.discovery_signature()


@dataclass(frozen=True)
class Fit:
    """Whether ``count`` devices of one accelerator type can be placed on a single node.

    ``fits_now``: some Ready, schedulable node has ``count`` free right now.
    ``fits_when_empty``: some node (in any state) has at least ``count`` allocatable, so the
    request could be placed once enough is freed; False means no node can ever hold it.
    ``largest_free_block``: the most free now on one node; ``free``: free in total;
    ``total``: capacity in total; ``largest_node``: the most allocatable on one node.

    Unpacks as the 3-tuple ``(fits_now, fits_when_empty, largest_free_block)``.
    """

    accelerator: str
    display_name: str
    count: int
    fits_now: bool
    fits_when_empty: bool
    largest_free_block: int
    free: int
    total: int
    largest_node: int

    def __iter__(self):
        return iter((self.fits_now, self.fits_when_empty, self.largest_free_block))

    @property
    def message(self):
        """Why the request cannot be placed, for the user ('' when it fits now)."""
        if self.fits_now:
            return ""
        name = self.display_name
        if not self.fits_when_empty:
            if self.largest_node == 0:
                return f"No node in the cluster offers {name}."
            return (f"{self.count} × {name} is more than any node holds: the largest "
                    f"{name} node has {self.largest_node}.")
        return (f"{self.count} × {name} cannot start now: {self.free} of {self.total} free, "
                f"at most {self.largest_free_block} on one node.")


class _Ordered:
    """Entries keyed by node name, listed sorted by name: in-place updates cost O(1), and only a
    change of membership re-sorts (at the next listing)."""

    def __init__(self):
        self.entries = {}
        self._list = None
        self._index = {}

    def set(self, name, entry):
        if name not in self.entries:
            self._list = None
        elif self._list is not None:
            self._list[self._index[name]] = entry
        self.entries[name] = entry

    def remove(self, name):
        if self.entries.pop(name, None) is not None:
            self._list = None

    def listing(self):
        """A new list of the entries sorted by name (a copy: snapshots never change)."""
        if self._list is None:
            names = sorted(self.entries)
            self._index = {name: i for i, name in enumerate(names)}
            self._list = [self.entries[name] for name in names]
        return list(self._list)


class _AcceleratorState:
    """Running sums for one accelerator over the nodes that offer it, adjusted node by node."""

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.nodes = _Ordered()  # name -> {"name", "allocatable", "in_use", "free"}
        self.contributions = {}  # node name -> (capacity, allocatable, in_use, free)
        self.sums = [0, 0, 0, 0]
        self.free_blocks = Counter()  # free-on-one-node value -> how many nodes
        self.node_sizes = Counter()  # allocatable-on-one-node value -> how many nodes

    def set_node(self, name, capacity, allocatable, in_use, free):
        self._subtract(name)
        new = (capacity, allocatable, in_use, free)
        self.contributions[name] = new
        for i, value in enumerate(new):
            self.sums[i] += value
        self.free_blocks[free] += 1
        self.node_sizes[allocatable] += 1
        self.nodes.set(name, {"name": name, "allocatable": allocatable, "in_use": in_use,
                              "free": free})

    def remove_node(self, name):
        self._subtract(name)
        self.nodes.remove(name)

    def _subtract(self, name):
        old = self.contributions.pop(name, None)
        if old is None:
            return
        for i, value in enumerate(old):
            self.sums[i] -= value
        self._drop(self.free_blocks, old[3])
        self._drop(self.node_sizes, old[1])

    @staticmethod
    def _drop(counter, value):
        counter[value] -= 1
        if counter[value] <= 0:
            del counter[value]

    def model(self):
        acc = self.accelerator
        total, allocatable, in_use, free = self.sums
        return {
            "slug": acc.slug,
            "display_name": acc.display_name,
            "resource": acc.resource,
            "memory": acc.memory or None,
            "total": total,
            "allocatable": allocatable,
            "in_use": in_use,
            "free": free,
            "largest_free_block": max(self.free_blocks, default=0),
            "nodes": self.nodes.listing(),
        }


class Inventory(FollowsNodesAndPods):
    """Capacity per accelerator type and per node, kept current from the Node and Pod caches.

    ``accelerators``: the operator's :class:`~crater_hub.accelerators.Accelerator` list; empty or
    None to discover them from the nodes. ``node_cache``/``pod_cache``: :class:`WatchCache`
    objects of ``"nodes"`` and all-namespaces ``"pods"``; by default the shared ones of the running
    loop. The inventory registers itself as a listener on both and replays what they already hold.

    Everything here is synchronous and cheap except :meth:`ready`. Snapshots returned by
    :meth:`capacity` are shared between callers: treat them as read-only.
    """

    def __init__(self, accelerators=None, *, node_cache=None, pod_cache=None):
        self._configured = list(accelerators) if accelerators else None
        self.node_cache = node_cache if node_cache is not None else WatchCache.shared("nodes")
        self.pod_cache = pod_cache if pod_cache is not None else WatchCache.shared("pods")
        self._nodes = {}  # name -> NodeState
        self._used = {}  # node name -> {resource: int} held by bound pods
        self._pods = {}  # pod key -> (node name, {resource: int})
        self._accelerators = self._configured or []
        self._states = {a.slug: _AcceleratorState(a) for a in self._accelerators}
        self._offers = {}  # node name -> tuple of the Accelerators it offers
        self._node_models = _Ordered()  # name -> node model dict
        self._signatures = Counter()  # discovery signature -> how many nodes have it
        self._dirty = set()  # nodes whose models and contributions must be rebuilt
        self._reshaped = set()  # nodes whose labels or resource names changed
        self._rediscover = False  # a discovery signature appeared or vanished
        self._snapshot = None
        self._summary = None
        self._json = None
        self._updated = time.time()
        self.follow_caches()

    # -- events ------------------------------------------------------------------------------

    def _changed(self, node_name):
        self._dirty.add(node_name)
        self._snapshot = self._summary = self._json = None
        self._updated = time.time()

    def _count_signature(self, state, delta):
        if self._configured is not None:
            return
        signature = state.discovery_signature()
        self._signatures[signature] += delta
        if self._signatures[signature] <= 0:
            del self._signatures[signature]
            self._rediscover = True
        elif delta > 0 and self._signatures[signature] == 1:
            self._rediscover = True

    def on_node_event(self, event_type, node, old):
        """A Node cache listener: keep the node's state; ignore changes that don't matter."""
        name = node["metadata"]["name"]
        previous = self._nodes.get(name)
        if event_type == "DELETED":
            if previous is None:
                return
            del self._nodes[name]
            self._count_signature(previous, -1)
            self._changed(name)
            return
        state = NodeState.from_node(node)
        if state == previous:
            return  # a heartbeat: nothing the inventory reports changed
        self._nodes[name] = state
        if previous is None or previous.structure() != state.structure():
            if previous is not None:
                self._count_signature(previous, -1)
            self._count_signature(state, +1)
            self._reshaped.add(name)
        self._changed(name)

    def on_pod_event(self, event_type, pod, old):
        """A Pod cache listener: move the pod's requests between nodes when that changes."""
        key = object_key(pod)
        previous = self._pods.get(key)
        if event_type != "DELETED" and holds_resources(pod):
            current = (pod["spec"]["nodeName"], pod_requests(pod))
        else:
            current = None
        if current == previous:
            return
        if previous is not None:
            used = self._used[previous[0]]
            for resource, value in previous[1].items():
                used[resource] -= value
            self._changed(previous[0])
        if current is None:
            del self._pods[key]
            return
        self._pods[key] = current
        used = self._used.setdefault(current[0], {})
        for resource, value in current[1].items():
            used[resource] = used.get(resource, 0) + value
        self._changed(current[0])

    # -- reading -----------------------------------------------------------------------------

    def accelerators(self):
        """The accelerator types: the configured ones, or those discovered on the nodes."""
        self._refresh()
        return list(self._accelerators)

    def capacity(self, detail=True):
        """The capacity snapshot, memoized until the next relevant change::

            {"accelerators": [{"slug", "display_name", "resource", "memory",
                               "total", "allocatable", "in_use", "free", "largest_free_block",
                               "nodes": [{"name", "allocatable", "in_use", "free"}, ...]}, ...],
             "nodes": [{"name", "ready", "schedulable",
                        "cpu": {"allocatable", "requested"}, "memory": {"allocatable", "requested"},
                        "accelerators": {slug: {"allocatable", "in_use", "free"}}}, ...],
             "updated": "2025-01-01T12:00:00.000Z"}

        Accelerator counts are integers (``total`` is node capacity, ``free`` counts Ready,
        schedulable nodes only); cpu and memory are quantity strings. Accelerators keep the
        configured (or discovered, by slug) order; nodes and per-accelerator nodes are sorted
        by name.

        ``detail=False`` leaves out both node lists: ``{"accelerators": [{... without "nodes"}],
        "updated"}``, what the spawn form needs, small enough to serialize per request on a
        5,000-node cluster (the detailed snapshot is about 1.5 MiB of JSON there).
        """
        if not detail:
            if self._summary is None:
                full = self.capacity()
                self._summary = {
                    "accelerators": [{k: v for k, v in a.items() if k != "nodes"}
                                     for a in full["accelerators"]],
                    "updated": full["updated"],
                }
            return self._summary
        if self._snapshot is None:
            self._refresh()
            self._snapshot = {
                "accelerators": [self._states[a.slug].model() for a in self._accelerators],
                "nodes": self._node_models.listing(),
                "updated": datetime.fromtimestamp(self._updated, timezone.utc)
                .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            }
        return self._snapshot

    def capacity_json(self):
        """:meth:`capacity` serialized with :func:`json.dumps`, memoized the same way."""
        if self._json is None:
            self._json = json.dumps(self.capacity())
        return self._json

    def fits(self, accelerator, count):
        """Whether ``count`` devices of ``accelerator`` (a slug) fit on one node: a :class:`Fit`.

        Raises ValueError naming the known slugs when the accelerator is unknown.
        """
        self._refresh()
        state = self._states.get(accelerator)
        if state is None:
            known = ", ".join(a.slug for a in self._accelerators) or "none"
            raise ValueError(f"unknown accelerator {accelerator!r}; known: {known}")
        largest_free = max(state.free_blocks, default=0)
        largest_node = max(state.node_sizes, default=0)
        return Fit(
            accelerator=accelerator,
            display_name=state.accelerator.display_name,
            count=count,
            fits_now=count <= largest_free,
            fits_when_empty=count <= largest_node,
            largest_free_block=largest_free,
            free=state.sums[3],
            total=state.sums[0],
            largest_node=largest_node,
        )

    # -- recomputing -------------------------------------------------------------------------

    def _refresh(self):
        """Apply pending changes: O(changed nodes), or O(nodes) when the accelerator list changes."""
        if self._rediscover:
            self._rediscover = False
            representatives = {}  # one node per discovery signature: same answer, fewer nodes
            for node in self._nodes.values():
                representatives.setdefault(node.discovery_signature(), node)
            found = catalog.discover(n.as_node() for n in representatives.values())
            if found != self._accelerators:
                self._accelerators = found
                self._states = {a.slug: _AcceleratorState(a) for a in found}
                self._offers = {}
                self._reshaped = set(self._nodes)
                self._dirty.update(self._nodes)
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        reshaped, self._reshaped = self._reshaped, set()
        for name in dirty:
            self._rebuild_node(name, name in reshaped)

    def _rebuild_node(self, name, reshaped):
        node = self._nodes.get(name)
        if node is None:  # gone (its pods' requests stay in _used until they go too)
            for acc in self._offers.pop(name, ()):
                self._states[acc.slug].remove_node(name)
            self._node_models.remove(name)
            return
        if reshaped or name not in self._offers:
            offers = tuple(a for a in self._accelerators if a.matches(node.labels, node.allocatable))
            kept = {a.slug for a in offers}
            for acc in self._offers.get(name, ()):
                if acc.slug not in kept:
                    self._states[acc.slug].remove_node(name)
            self._offers[name] = offers
        used = self._used.get(name) or {}
        available = node.ready and node.schedulable
        accelerators = {}
        for acc in self._offers[name]:
            allocatable = node.allocatable.get(acc.resource, 0)
            in_use = used.get(acc.resource, 0)
            free = max(0, allocatable - in_use) if available else 0
            self._states[acc.slug].set_node(
                name, node.capacity.get(acc.resource, allocatable), allocatable, in_use, free)
            accelerators[acc.slug] = {"allocatable": allocatable, "in_use": in_use, "free": free}
        self._node_models.set(name, {
            "name": name,
            "ready": node.ready,
            "schedulable": node.schedulable,
            "cpu": {"allocatable": _format("cpu", node.allocatable.get("cpu", 0)),
                    "requested": _format("cpu", used.get("cpu", 0))},
            "memory": {"allocatable": _format("memory", node.allocatable.get("memory", 0)),
                       "requested": _format("memory", used.get("memory", 0))},
            "accelerators": accelerators,
        })


_shared = {}


def shared_inventory(accelerators=None):
    """The inventory of the running loop for this accelerator list, on the shared caches."""
    loop = asyncio.get_running_loop()
    for key in [k for k in _shared if k[0].is_closed()]:
        del _shared[key]
    signature = tuple(
        (a.slug, a.resource, tuple(sorted(a.node_selector.items()))) for a in accelerators or ()
    )
    key = (loop, signature)
    inventory = _shared.get(key)
    if inventory is None:
        inventory = _shared[key] = Inventory(accelerators)
    return inventory
