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

from .devices import gpu_equivalent, natural_key, shared_device_index
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
    """Joined device rows, memoized per node and per (index version, snapshot, accelerator list).

    ``index``: a :class:`~crater_hub.gpus.devices.DeviceIndex`; ``accelerators``: a callable
    giving the current :class:`~crater_hub.accelerators.Accelerator` list; ``threshold`` and
    ``window``: the idle rule; ``system_namespaces``: for :func:`classify`.

    A node is joined again only when its :class:`~crater_hub.gpus.devices.NodeDevices` was rebuilt
    (one of its pods changed) or a new snapshot arrived (once per scrape interval): a pod event on
    a 5,000-node cluster costs one node's join, not the cluster's.
    """

    def __init__(self, index, accelerators, *, threshold=0.05, window=300.0,
                 system_namespaces=(), clock=time.time):
        self.index = index
        self.accelerators = accelerators
        self.threshold = threshold
        self.window = window
        self.system_namespaces = tuple(system_namespaces)
        self.clock = clock
        self.joins = 0  # node joins done, for tests and benchmarks
        self.last_snapshot = None  # the latest snapshot a request saw (for /hub/metrics)
        self._key = None
        self._acc_key = None
        self._nodes = {}  # node name -> _NodeJoin
        self._rows = None
        self._groups = None  # [(accelerator slug, node name, [row, ...])]
        self._group_pos = {}  # (accelerator slug, node name) -> index in _groups
        self._totals = {}  # accelerator slug -> running sums of the nodes' partial sums
        self._mig_for = None  # the snapshot _mig_index was made from
        self._mig_index = {}  # node -> MIG profile -> sample keys, sorted
        self._summary = None

    # -- the join ----------------------------------------------------------------------------

    def _refresh(self, snapshot):
        accs = self.accelerators()
        acc_key = tuple((a.slug, a.resource, tuple(sorted(a.node_selector.items()))) for a in accs)
        nodes = self.index.nodes()
        version = self.index.version
        key = (version, id(snapshot), acc_key)
        if key == self._key:
            return
        now = self.clock()
        changed = None
        if self._key is not None and self._key[1:] == key[1:]:
            changed = self.index.changes_since(self._key[0])  # only pods/nodes moved
        if changed is None:
            self._full_join(snapshot, accs, acc_key, nodes, now)
        else:
            self._partial_join(snapshot, accs, nodes, changed, now)
        self._key = key

    def _full_join(self, snapshot, accs, acc_key, nodes, now):
        if acc_key != self._acc_key:
            self._nodes = {}
            self._acc_key = acc_key
        joined = {}
        for nd in nodes:
            memo = self._nodes.get(nd.name)
            if memo is None or memo.devices is not nd or memo.snapshot is not snapshot:
                memo = self._join_node(nd, snapshot, accs, now, memo)
            joined[nd.name] = memo
        self._nodes = joined
        self._regroup(accs, nodes)
        self._totals = {}
        for join in joined.values():
            _add_partial(self._totals, join.partial, +1)

    def _partial_join(self, snapshot, accs, nodes, changed, now):
        regroup = False
        for name in changed:
            old = self._nodes.get(name)
            nd = self.index.node(name)
            if old is not None:
                _add_partial(self._totals, old.partial, -1)
            if nd is None:
                if old is not None:
                    del self._nodes[name]
                    regroup = True
                continue
            new = self._join_node(nd, snapshot, accs, now, old)
            self._nodes[name] = new
            _add_partial(self._totals, new.partial, +1)
            if old is None or set(old.groups) != set(new.groups):
                regroup = True
                continue
            for acc, rows in new.groups.items():
                self._groups[self._group_pos[(acc, name)]] = (acc, name, rows)
        if regroup:
            self._regroup(accs, nodes)
        self._rows = None
        self._summary = None

    def _regroup(self, accs, nodes):
        order = [a.slug for a in accs]
        extra = sorted({acc for j in self._nodes.values() for acc in j.groups} - set(order))
        groups, positions = [], {}
        for acc in order + extra:
            for nd in nodes:
                join = self._nodes.get(nd.name)
                rows = join.groups.get(acc) if join is not None else None
                if rows:
                    positions[(acc, nd.name)] = len(groups)
                    groups.append((acc, nd.name, rows))
        self._groups = groups
        self._group_pos = positions
        self._rows = None
        self._summary = None

    def _join_node(self, nd, snapshot, accs, now, previous):
        self.joins += 1
        samples = {} if snapshot is None or snapshot.error else snapshot.samples
        # who holds what (with workload), per slot: kept while the node's devices and the DCGM
        # holder labels it relies on are unchanged, so a new snapshot only refreshes numbers
        mig = self._mig_cells(nd, snapshot, samples)
        signature = None
        if nd.unplaced and samples:
            signature = tuple(getattr(samples.get(mig.get(slot.key, slot.key)), "holders", None)
                              for slot in nd.slots)
        signature = (signature, tuple(sorted(mig.items())) if mig else None)
        if previous is not None and previous.devices is nd and previous.signature == signature:
            static = previous.static
        else:
            static = self._static(nd, samples, accs, previous, mig)
        idle_before = previous.idle_since if previous is not None else {}
        groups = {}
        idle_since = {}
        threshold, window = self.threshold, self.window
        for slot_key, sample_key, acc, held, holder_key, base in static:
            sample = samples.get(sample_key)
            if sample is not None:
                util = sample.utilization
                row = {**base, "utilization": util, "memory_used": sample.memory_used,
                       "memory_total": sample.memory_total, "model": sample.model}
            else:
                util = None
                row = {**base, "utilization": None, "memory_used": None, "memory_total": None,
                       "model": None}
            if held and util is not None and util < threshold:
                before = idle_before.get(slot_key)
                since = before[1] if before and before[0] == holder_key else now
                idle_since[slot_key] = (holder_key, since)
                if now - since >= window:
                    row["idle"], row["idle_since"] = True, since
            groups.setdefault(acc, []).append(row)
        return _NodeJoin(nd, snapshot, groups, idle_since, _partial_summary(groups), signature, static)

    def _mig_cells(self, nd, snapshot, samples):
        """``{slot key: sample key}`` for MIG slots whose parent GPU the node does not say (a real
        cluster, without localkube's layout): the n-th instance of a profile is the n-th DCGM
        series of that profile on the node, so the cell sits in its real parent GPU."""
        if not samples or not any(s.instance is not None and s.gpu.startswith("mig-")
                                  for s in nd.slots):
            return {}
        if self._mig_for is not snapshot:
            index = {}
            for key, sample in samples.items():
                if sample.instance is not None:
                    index.setdefault(key[0], {}).setdefault(sample.mig_profile, []).append(key)
            for profiles in index.values():
                for keys in profiles.values():
                    keys.sort(key=lambda k: (natural_key(k[1]), natural_key(k[2] or "")))
            self._mig_index, self._mig_for = index, snapshot
        on_node = self._mig_index.get(nd.name, {})
        out = {}
        for slot in nd.slots:
            if slot.instance is not None and slot.gpu.startswith("mig-"):
                keys = on_node.get(slot.profile) or ()
                n = int(slot.instance)
                if n < len(keys):
                    out[slot.key] = keys[n]
        return out

    def _static(self, nd, samples, accs, previous, mig):
        """Per slot: (key, sample key, accelerator, holders, holder pods, row base) — what does
        not depend on utilization. Workloads of pods seen in the previous join are reused."""
        node_dict = self.index.node_object(nd.name) or {"metadata": {"labels": nd.labels}}
        allocatable = (node_dict.get("status") or {}).get("allocatable") or {}
        known = previous.workloads if previous is not None else {}
        workloads = {}
        per_resource = {}
        placed = {}  # (node, gpu, instance, resource) -> [(holder, placement)]
        pending = {}  # resource -> [[holder, units left]]
        for who, resource, units in nd.unplaced:
            pending.setdefault(resource, []).append([who, units])
        if pending and samples:  # DCGM holder labels place the pods the ids did not
            for slot in nd.slots:
                sample = samples.get(mig.get(slot.key, slot.key))
                if not sample or not sample.holders or slot.resource not in pending:
                    continue
                for entry in pending[slot.resource]:
                    if entry[1] > 0 and entry[0] in sample.holders:
                        placed.setdefault(slot.key + (slot.resource,), []).append((entry[0], "dcgm"))
                        entry[1] -= 1
        out = []
        for slot in nd.slots:
            slot_key = slot.key + (slot.resource,)
            holders = [(h, "device") for h in slot.holders]
            holders += placed.get(slot_key, [])
            room = slot.replicas - len(holders)
            for entry in pending.get(slot.resource, ()):
                while room > 0 and entry[1] > 0:
                    holders.append((entry[0], "count"))
                    entry[1] -= 1
                    room -= 1
            res = per_resource.get(slot.resource)
            if res is None:
                res = per_resource[slot.resource] = (
                    _accelerator_of(accs, nd.labels, allocatable, slot.resource),
                    gpu_equivalent(node_dict, slot.resource))
            acc, unit_share = res
            held = []
            for who, placement in holders:
                entry = nd.pods.get(who)
                w = None
                if entry is not None:
                    cached = known.get(who)
                    if cached is not None and cached[0] is entry[0]:
                        w = cached[1]
                    else:
                        w = classify(entry[0], system_namespaces=self.system_namespaces)
                    workloads[who] = (entry[0], w)
                held.append({"namespace": who[0], "pod": who[1], "placement": placement,
                             "kind": w.kind if w else "external",
                             "user": w.user if w else None,
                             "workload": w.name if w else who[1],
                             "link": w.link if w else None})
            sample_key = mig.get(slot.key, slot.key)
            base = {"node": slot.node, "accelerator": acc, "resource": slot.resource,
                    "gpu": sample_key[1], "instance": sample_key[2], "profile": slot.profile,
                    "replicas": slot.replicas, "share": unit_share * slot.replicas,
                    "holders": held, "idle": False, "idle_since": None}
            out.append((slot_key, sample_key, acc, held, tuple(h["pod"] for h in held), base))
        return _Static(out, workloads)

    # -- reading -----------------------------------------------------------------------------

    def rows(self, snapshot):
        """Every device row (memoized), in page order."""
        self._refresh(snapshot)
        if self._rows is None:
            self._rows = [r for g in self._groups for r in g[2]]
        return self._rows

    def summary(self, snapshot):
        """Per accelerator: devices, allocated, idle, GPU equivalents held (by workload kind) and
        idle, mean utilization, nodes; kept as running totals of per-node sums (memoized)."""
        self._refresh(snapshot)
        if self._summary is None:
            accs = {a.slug: a for a in self.accelerators()}
            order = {a: i for i, a in enumerate(accs)}
            summary = []
            for acc, t in sorted(self._totals.items(),
                                 key=lambda kv: (order.get(kv[0], len(order)), kv[0])):
                if t["nodes"] <= 0:
                    continue
                a = accs.get(acc)
                summary.append({
                    "slug": acc, "display_name": a.display_name if a else acc,
                    "resource": a.resource if a else acc, "memory": (a.memory or None) if a else None,
                    "nodes": t["nodes"], "devices": t["devices"], "allocated": t["allocated"],
                    "idle": t["idle"], "allocated_gpus": max(0.0, t["allocated_gpus"]),
                    "idle_gpus": max(0.0, t["idle_gpus"]),
                    "by_kind": {k: v for k, v in sorted(t["by_kind"].items()) if v > 1e-9},
                    "mean_utilization": t["util_sum"] / t["util_n"] if t["util_n"] else None,
                })
            self._summary = summary
        return self._summary

    def page(self, snapshot, filters):
        """``(rows of the page, total matching node rows)`` for :class:`Filters`; rows are
        grouped by accelerator, then node name, then device."""
        self._refresh(snapshot)
        groups = self._groups
        if filters.accelerator or filters.node or filters.idle:
            groups = [g for g in groups
                      if (not filters.accelerator or g[0] == filters.accelerator)
                      and (not filters.node or filters.node in g[1].lower())
                      and (not filters.idle or any(r["idle"] for r in g[2]))]
        chosen = groups[filters.offset:filters.offset + filters.limit]
        rows = [r for g in chosen for r in g[2] if not filters.idle or r["idle"]]
        return rows, len(groups)


class _Static(list):
    """The utilization-independent part of a node's join, and the workloads it classified."""

    def __init__(self, items, workloads):
        super().__init__(items)
        self.workloads = workloads


@dataclass
class _NodeJoin:
    devices: object  # the NodeDevices joined
    snapshot: object  # the snapshot joined with
    groups: dict  # accelerator slug -> [row, ...]
    idle_since: dict  # slot key -> (holder pods, since)
    partial: dict  # accelerator slug -> partial sums
    signature: object = None  # the DCGM holder labels the placement used
    static: object = None  # _Static

    @property
    def workloads(self):
        return self.static.workloads if self.static is not None else {}


def _add_partial(totals, partial, sign):
    """Add (``sign`` +1) or remove (-1) one node's partial sums from the running ``totals``."""
    for acc, p in partial.items():
        t = totals.get(acc)
        if t is None:
            t = totals[acc] = {"nodes": 0, "devices": 0, "allocated": 0, "idle": 0,
                               "allocated_gpus": 0.0, "idle_gpus": 0.0, "by_kind": {},
                               "util_sum": 0.0, "util_n": 0}
        t["nodes"] += sign
        for k in ("devices", "allocated", "idle", "allocated_gpus", "idle_gpus", "util_sum", "util_n"):
            t[k] += sign * p[k]
        for kind, v in p["by_kind"].items():
            t["by_kind"][kind] = t["by_kind"].get(kind, 0.0) + sign * v


def _partial_summary(groups):
    out = {}
    for acc, rows in groups.items():
        p = {"devices": 0, "allocated": 0, "idle": 0, "allocated_gpus": 0.0, "idle_gpus": 0.0,
             "by_kind": {}, "util_sum": 0.0, "util_n": 0}
        for row in rows:
            p["devices"] += 1
            if row["holders"]:
                p["allocated"] += 1
                unit = row["share"] / row["replicas"]
                for h in row["holders"]:
                    p["allocated_gpus"] += unit
                    p["by_kind"][h["kind"]] = p["by_kind"].get(h["kind"], 0.0) + unit
            if row["idle"]:
                p["idle"] += 1
                p["idle_gpus"] += row["share"]
            if row["utilization"] is not None:
                p["util_sum"] += row["utilization"]
                p["util_n"] += 1
        out[acc] = p
    return out


def visible_rows(rows, viewer, *, show_names):
    """``rows`` as ``viewer`` may see them: with ``show_names`` unchanged, else other users'
    holders become ``"other user"`` with no workload name, pod or link, pods of no hub user show
    only their kind (``"system"``, ``"external"``), and the viewer's own ``"you"``. Returns new row dicts; the memoized ones are not touched."""
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
            elif h["user"] is None:  # the platform's or an unmanaged pod: its kind, not its name
                held.append({"placement": h["placement"], "kind": h["kind"], "owner": h["kind"],
                             "user": None, "workload": None, "link": None, "namespace": None,
                             "pod": None})
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
