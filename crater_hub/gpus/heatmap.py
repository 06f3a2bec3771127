"""The heatmap: every device slot joined with who holds it and how busy it is.

:class:`Heatmap` joins three shared, already-current sources — the :class:`DeviceIndex` (slots and
holders from the Node and Pod watch caches), the accelerator types (the inventory's list) and the
latest utilization snapshot (one Prometheus query per scrape interval for all viewers) — into one
list of device rows. The join runs only when one of them changed (index version, snapshot time),
so a request costs a filter and a slice of memoized rows, plus hiding names its caller may not
see; at 5,000 nodes / 40,000 GPUs that keeps the REST answer within a few milliseconds.

Idle: a slot that is held, whose utilization is known and stays below the threshold for the idle
window (both ``Crater`` traits), is *allocated but idle*. The window is measured from the
snapshots this hub has seen (the first low sample starts it; a new holder or a busy sample resets
it), not by an extra range query per device.

Holders of a slot, best first: device ids on the pod (``placement: "device"``), the DCGM
exporter's pod labels of the snapshot (``"dcgm"``), else the node's remaining holders spread over
its free slots in order (``"count"``: the pod holds that many units of this node, which ones is
not known).
"""

import time
from dataclasses import dataclass

from .devices import gpu_equivalent, shared_device_index
from .workloads import classify

MAX_LIMIT = 2000
DEFAULT_LIMIT = 200


class FilterError(ValueError):
    """A bad filter value; ``field`` names the query argument."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Filters:
    accelerator: str | None = None
    node: str | None = None
    idle: bool = False
    offset: int = 0
    limit: int = DEFAULT_LIMIT


def parse_filters(args, accelerators):
    """:class:`Filters` from query arguments (``{name: str}``); FilterError naming the field.

    ``accelerator``: a known slug; ``node``: a substring of node names (≤ 253 characters of
    ``[a-z0-9.-]``); ``idle``: true/false/1/0; ``offset``/``limit``: rows (node × accelerator),
    limit 1–2000.
    """
    known = [a["slug"] for a in accelerators]
    acc = args.get("accelerator") or None
    if acc is not None and acc not in known:
        raise FilterError("accelerator", f"accelerator {acc!r} is unknown; allowed: "
                          f"{', '.join(known) or 'none (no accelerators in the cluster)'}")
    node = args.get("node") or None
    if node is not None and (len(node) > 253 or not all(c.isalnum() or c in ".-" for c in node)):
        raise FilterError("node", "node must be part of a node name: at most 253 characters of "
                          "letters, digits, '.' and '-'")
    idle_raw = (args.get("idle") or "false").lower()
    if idle_raw not in ("true", "false", "1", "0", "yes", "no"):
        raise FilterError("idle", f"idle must be true or false, got {args.get('idle')!r}")

    def integer(name, default, low, high):
        raw = args.get(name)
        if raw in (None, ""):
            return default
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise FilterError(name, f"{name} must be an integer from {low} to {high}, got {raw!r}")
        return value

    return Filters(acc, node.lower() if node else None, idle_raw in ("true", "1", "yes"),
                   integer("offset", 0, 0, 10**9), integer("limit", DEFAULT_LIMIT, 1, MAX_LIMIT))


def _accelerator_of(accelerators, labels, allocatable, resource):
    for acc in accelerators:
        if acc.resource == resource and acc.matches(labels, allocatable):
            return acc.slug
    return resource


class Heatmap:
    """Joined device rows, memoized per (index version, snapshot, accelerator list).

    ``index``: a :class:`~crater_hub.gpus.devices.DeviceIndex`; ``accelerators``: a callable
    giving the current :class:`~crater_hub.accelerators.Accelerator` list; ``threshold`` and
    ``window``: the idle rule; ``system_namespaces``: for :func:`classify`.
    """

    def __init__(self, index, accelerators, *, threshold=0.05, window=300.0,
                 system_namespaces=(), clock=time.time):
        self.index = index
        self.accelerators = accelerators
        self.threshold = threshold
        self.window = window
        self.system_namespaces = tuple(system_namespaces)
        self.clock = clock
        self.joins = 0
        self._key = None
        self._rows = None  # [row dict]
        self._groups = None  # [(accelerator slug, node name, [row, ...])]
        self._summary = None
        self._idle_since = {}  # slot key -> (holders, since)
        self._workloads = {}  # (namespace, pod, uid) -> Workload

    # -- the join ----------------------------------------------------------------------------

    def rows(self, snapshot):
        """Every device row (memoized): see :meth:`_row` for its keys."""
        accs = self.accelerators()
        key = (self.index.version, getattr(snapshot, "taken_at", None), id(snapshot),
               tuple((a.slug, a.resource) for a in accs))
        if key != self._key:
            self._join(snapshot, accs)
            self._key = key
        return self._rows

    def _workload(self, pod):
        meta = pod["metadata"]
        k = (meta.get("namespace"), meta["name"], meta.get("uid"))
        w = self._workloads.get(k)
        if w is None:
            w = self._workloads[k] = classify(pod, system_namespaces=self.system_namespaces)
        return w

    def _join(self, snapshot, accs):
        self.joins += 1
        now = self.clock()
        samples = {} if snapshot is None or snapshot.error else snapshot.samples
        by_node_acc = {}
        rows = []
        live_workloads = {}
        idle_since = {}
        for nd in self.index.nodes():
            node_dict = self.index.node_object(nd.name) or {"metadata": {"labels": nd.labels}}
            allocatable = (node_dict.get("status") or {}).get("allocatable") or {}
            acc_of = {}
            placed = {}  # (resource, gpu, instance) -> [(holder, placement)]
            pending = {}  # resource -> [[holder, units left]]
            for who, resource, units in nd.unplaced:
                pending.setdefault(resource, []).append([who, units])
            # DCGM holder labels place the pods the ids did not
            if pending and samples:
                for slot in nd.slots:
                    sample = samples.get(slot.key)
                    if not sample or not sample.holders or slot.resource not in pending:
                        continue
                    for entry in pending[slot.resource]:
                        if entry[1] > 0 and entry[0] in sample.holders:
                            placed.setdefault(slot.key + (slot.resource,), []).append((entry[0], "dcgm"))
                            entry[1] -= 1
            for slot in nd.slots:
                holders = [(h, "device") for h in slot.holders]
                holders += placed.get(slot.key + (slot.resource,), [])
                room = slot.replicas - len(holders)
                for entry in pending.get(slot.resource, ()):
                    while room > 0 and entry[1] > 0:
                        holders.append((entry[0], "count"))
                        entry[1] -= 1
                        room -= 1
                acc = acc_of.get(slot.resource)
                if acc is None:
                    acc = acc_of[slot.resource] = _accelerator_of(accs, nd.labels, allocatable,
                                                                  slot.resource)
                sample = samples.get(slot.key)
                util = sample.utilization if sample is not None else None
                held = []
                for who, placement in holders:
                    entry = nd.pods.get(who)
                    w = None
                    if entry is not None:
                        w = self._workload(entry[0])
                        live_workloads[(who[0], who[1], entry[0]["metadata"].get("uid"))] = w
                    held.append({"namespace": who[0], "pod": who[1], "placement": placement,
                                 "kind": w.kind if w else "external",
                                 "user": w.user if w else None,
                                 "workload": w.name if w else who[1],
                                 "link": w.link if w else None})
                idle = False
                since = None
                if held and util is not None and util < self.threshold:
                    holder_key = tuple(h["pod"] for h in held)
                    previous = self._idle_since.get(slot.key + (slot.resource,))
                    since = previous[1] if previous and previous[0] == holder_key else now
                    idle_since[slot.key + (slot.resource,)] = (holder_key, since)
                    idle = now - since >= self.window
                row = {
                    "node": slot.node, "accelerator": acc, "resource": slot.resource,
                    "gpu": slot.gpu, "instance": slot.instance, "profile": slot.profile,
                    "replicas": slot.replicas,
                    "share": gpu_equivalent(node_dict, slot.resource) * slot.replicas,
                    "holders": held,
                    "utilization": util,
                    "memory_used": sample.memory_used if sample is not None else None,
                    "memory_total": sample.memory_total if sample is not None else None,
                    "model": sample.model if sample is not None else None,
                    "idle": idle,
                    "idle_since": since if idle else None,
                }
                rows.append(row)
                by_node_acc.setdefault((acc, slot.node), []).append(row)
        self._idle_since = idle_since
        self._workloads = live_workloads
        self._rows = rows
        order = {a.slug: i for i, a in enumerate(accs)}
        self._groups = sorted(((acc, node, r) for (acc, node), r in by_node_acc.items()),
                              key=lambda g: (order.get(g[0], len(order)), g[0], g[1]))
        self._summary = None

    # -- reading -----------------------------------------------------------------------------

    def summary(self, snapshot):
        """Per accelerator: devices, allocated, idle, mean utilization, nodes (memoized)."""
        self.rows(snapshot)
        if self._summary is None:
            accs = {a.slug: a for a in self.accelerators()}
            out = {}
            for acc, _node, rows in self._groups:
                s = out.get(acc)
                if s is None:
                    a = accs.get(acc)
                    s = out[acc] = {
                        "slug": acc, "display_name": a.display_name if a else acc,
                        "resource": a.resource if a else acc,
                        "memory": (a.memory or None) if a else None,
                        "nodes": 0, "devices": 0, "allocated": 0, "idle": 0,
                        "allocated_gpus": 0.0, "idle_gpus": 0.0, "by_kind": {},
                        "_util": [0.0, 0],
                    }
                s["nodes"] += 1
                for row in rows:
                    s["devices"] += 1
                    if row["holders"]:
                        s["allocated"] += 1
                        unit = row["share"] / row["replicas"]
                        for h in row["holders"]:
                            s["allocated_gpus"] += unit
                            s["by_kind"][h["kind"]] = s["by_kind"].get(h["kind"], 0.0) + unit
                    if row["idle"]:
                        s["idle"] += 1
                        s["idle_gpus"] += row["share"]
                    if row["utilization"] is not None:
                        s["_util"][0] += row["utilization"]
                        s["_util"][1] += 1
            for s in out.values():
                total, n = s.pop("_util")
                s["mean_utilization"] = total / n if n else None
            self._summary = list(out.values())
        return self._summary

    def page(self, snapshot, filters):
        """``(rows of the page, total matching node rows)`` for :class:`Filters`; rows are
        grouped by accelerator, then node name, then device."""
        self.rows(snapshot)
        groups = self._groups
        if filters.accelerator or filters.node or filters.idle:
            groups = [g for g in groups
                      if (not filters.accelerator or g[0] == filters.accelerator)
                      and (not filters.node or filters.node in g[1].lower())
                      and (not filters.idle or any(r["idle"] for r in g[2]))]
        chosen = groups[filters.offset:filters.offset + filters.limit]
        rows = [r for g in chosen for r in g[2] if not filters.idle or r["idle"]]
        return rows, len(groups)


def visible_rows(rows, viewer, *, show_names):
    """``rows`` as ``viewer`` may see them: with ``show_names`` unchanged, else other users'
    holders become ``"other user"`` with no workload name, pod or link, and the viewer's own
    ``"you"`` (user name kept). Returns new row dicts; the memoized ones are not touched."""
    if show_names:
        return rows
    out = []
    for row in rows:
        if not row["holders"]:
            out.append(row)
            continue
        held = []
        for h in row["holders"]:
            if h["user"] is not None and h["user"] == viewer:
                held.append({**h, "owner": "you"})
            else:
                held.append({"placement": h["placement"], "kind": h["kind"], "owner": "other user",
                             "user": None, "workload": None, "link": None, "namespace": None,
                             "pod": None})
        out.append({**row, "holders": held})
    return out


def owner_label(holder, viewer):
    """The owner text of a holder: ``"you"``, the user name, or ``"other user"``/the kind."""
    if "owner" in holder:
        return holder["owner"]
    if holder["user"] is None:
        return holder["kind"]
    return "you" if holder["user"] == viewer else holder["user"]


_shared = {}


def shared_heatmap(crater, accelerators, system_namespaces=()):
    """The hub's heatmap on the shared device index, with ``crater``'s idle rule."""
    index = shared_device_index()
    key = (id(index), crater.gpu_idle_threshold, crater.gpu_idle_window, tuple(system_namespaces))
    heatmap = _shared.get(id(index))
    if heatmap is None or heatmap[0] != key:
        heatmap = _shared[id(index)] = (key, Heatmap(
            index, accelerators, threshold=crater.gpu_idle_threshold,
            window=crater.gpu_idle_window, system_namespaces=system_namespaces))
    heatmap[1].accelerators = accelerators
    return heatmap[1]
