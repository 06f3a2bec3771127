"""Device slots: every physical GPU (and MIG instance) of the cluster, and which pods hold it.

The heatmap draws one cell per device *as a person thinks of it*: a physical GPU. Kubernetes only
knows extended-resource *units*, and three kinds of unit map to physical GPUs differently:

- **whole GPUs** (``nvidia.com/gpu``, ``amd.com/gpu``, ``huawei.com/Ascend910``): one unit, one
  GPU, one :class:`Slot` with ``replicas == 1``;
- **time-sliced GPUs** (node label ``nvidia.com/gpu.replicas: "R"``, NVIDIA's device plugin
  sharing): R units per physical GPU; one :class:`Slot` per physical GPU with ``replicas == R``,
  shared by up to R holders. Physical count: label ``nvidia.com/gpu.count``, else
  allocatable / R;
- **MIG instances** (``nvidia.com/mig-<profile>`` under the mixed strategy): one :class:`Slot` per
  instance, with ``instance`` set and ``gpu`` naming its parent GPU, so the heatmap groups the
  instances as cells within their GPU.

Which slot a pod holds comes, best first, from:

1. the device ids recorded on the pod (localkube's annotation ``localkube.crater.io/devices``,
   ``{"nvidia.com/gpu": ["0", "1"]}``; time-sliced ids ``"<gpu>::<replica>"``, MIG ids
   ``"<gpu>:<instance>"``) — the node's layout comes from the same annotation on the Node
   (``{resource: {"ids": [...]}}``) when present;
2. the DCGM exporter's holder labels of the utilization snapshot (real clusters): joined later, in
   :mod:`crater_hub.gpus.heatmap`, which has the snapshot;
3. otherwise the pod is *placed by count*: it is known to hold N units of the node's resource,
   not which; :attr:`NodeDevices.unplaced` lists such pods and the heatmap marks its guess.

:class:`DeviceIndex` keeps this per node from the shared Node and Pod watch caches, rebuilding a
node's slots only when the node or a pod bound to it changes what it holds: a request reads
memoized per-node tuples, never the API.
"""

import asyncio
import bisect
import json
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction

from ..kube.caches import FollowsNodesAndPods, WatchCache, object_key
from ..quantity import parse_quantity
from .workloads import device_requests, is_device_resource

DEVICES_ANNOTATION = "localkube.crater.io/devices"
REPLICAS_LABEL = "nvidia.com/gpu.replicas"
COUNT_LABEL = "nvidia.com/gpu.count"
PRODUCT_LABEL = "nvidia.com/gpu.product"
MIG_PREFIX = "nvidia.com/mig-"
MIG_PROFILE = re.compile(r"^(\d+)g\.(\d+)gb$")
TERMINAL_PHASES = ("Succeeded", "Failed")
#: compute slices of a MIG-capable GPU, by product substring (A30 has 4; A100/H100/H200 have 7)
MIG_SLICES = (("A30", 4),)
DEFAULT_MIG_SLICES = 7


@dataclass(frozen=True)
class Slot:
    """One device cell: a physical GPU (whole or time-sliced) or a MIG instance within one.

    ``holders``: ``((namespace, pod), ...)`` known from device ids; ``replicas``: how many holders
    it can have at once (time-slicing), 1 otherwise.
    """

    node: str
    resource: str
    gpu: str
    instance: str | None = None
    profile: str | None = None
    replicas: int = 1
    holders: tuple = ()

    @property
    def key(self):
        """The utilization snapshot's key of this device: ``(node, gpu, instance)``."""
        return (self.node, self.gpu, self.instance)


@dataclass(frozen=True)
class NodeDevices:
    """A node's slots and the pods holding its devices.

    ``slots``: sorted by resource, GPU, instance. ``pods``: ``{(namespace, pod): (pod dict,
    {resource: units})}`` for every pod bound here that holds devices. ``unplaced``: the subset
    whose device ids are unknown, ``((namespace, pod), resource, units)``.
    """

    name: str
    labels: dict
    slots: tuple
    pods: dict = field(default_factory=dict)
    unplaced: tuple = ()


def _annotation(obj):
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(DEVICES_ANNOTATION)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _int_label(labels, name):
    try:
        value = int(labels.get(name, ""))
    except ValueError:
        return None
    return value if value > 0 else None


def mig_profile(resource):
    """``"1g.10gb"`` for ``nvidia.com/mig-1g.10gb``, else None."""
    return resource[len(MIG_PREFIX):] if resource.startswith(MIG_PREFIX) else None


def replicas(node, resource):
    """How many units of ``resource`` share one physical GPU on ``node`` (time-slicing), ≥ 1."""
    if mig_profile(resource):
        return 1
    if not resource.startswith("nvidia.com/"):
        return 1
    labels = (node.get("metadata") or {}).get("labels") or {}
    return _int_label(labels, REPLICAS_LABEL) or 1


def gpu_equivalent(node, resource):
    """The share of a physical GPU one unit of ``resource`` is on ``node`` (for accounting).

    1 for a whole GPU; 1/replicas for a time-sliced replica; for a MIG instance its compute
    slices over the GPU's (``1g.10gb`` of a 7-slice A100 = 1/7, ``3g.40gb`` = 3/7; an A30 has 4).
    """
    profile = mig_profile(resource)
    if profile:
        match = MIG_PROFILE.match(profile)
        if not match:
            return 1.0
        labels = (node.get("metadata") or {}).get("labels") or {}
        product = labels.get(PRODUCT_LABEL, "")
        slices = next((n for name, n in MIG_SLICES if name in product), DEFAULT_MIG_SLICES)
        return min(1.0, int(match.group(1)) / slices)
    return 1.0 / replicas(node, resource)


def parse_device_id(resource, device_id, replica_count=1):
    """``(gpu, instance)`` of a device id: ``"3"`` → ("3", None); time-sliced ``"1::2"`` →
    ("1", None); MIG ``"0:1"`` → ("0", "1")."""
    device_id = str(device_id)
    if "::" in device_id:
        return device_id.split("::", 1)[0], None
    if ":" in device_id and mig_profile(resource):
        gpu, instance = device_id.split(":", 1)
        return gpu, instance
    if replica_count > 1 and device_id.isdigit():
        # a time-sliced node whose ids are plain unit numbers: unit u is on GPU u // R
        return str(int(device_id) // replica_count), None
    return device_id, None


def _allocatable(node):
    out = {}
    for resource, raw in ((node.get("status") or {}).get("allocatable") or {}).items():
        if is_device_resource(resource):
            try:
                value = math.floor(parse_quantity(raw))
            except (ValueError, TypeError):
                continue
            if value > 0:
                out[resource] = value
    return out


def node_slots(node, holders=None):
    """The slots of ``node`` (a Node dict) with ``holders``: ``{(resource, gpu, instance):
    [(namespace, pod), ...]}`` from device ids. Pure."""
    holders = holders or {}
    name = node["metadata"]["name"]
    labels = (node.get("metadata") or {}).get("labels") or {}
    layout = _annotation(node)
    out = []
    for resource, units in sorted(_allocatable(node).items()):
        profile = mig_profile(resource)
        reps = replicas(node, resource)
        ids = (layout.get(resource) or {}).get("ids") if isinstance(layout.get(resource), dict) else None
        if profile:
            if ids:
                cells = [parse_device_id(resource, i) for i in ids]
            else:  # parent unknown (no layout): one pseudo-GPU per profile, instances numbered
                cells = [(f"mig-{profile}", str(i)) for i in range(units)]
            for gpu, instance in cells:
                out.append(Slot(name, resource, gpu, instance, profile, 1,
                                tuple(sorted(holders.get((resource, gpu, instance), ())))))
            continue
        if ids and reps == 1:
            gpus = [str(i) for i in ids]
        elif ids:
            gpus = list(dict.fromkeys(parse_device_id(resource, i, reps)[0] for i in ids))
        else:
            physical = (_int_label(labels, COUNT_LABEL) if reps > 1 else None) or math.ceil(units / reps)
            gpus = [str(i) for i in range(physical)]
        for gpu in gpus:
            out.append(Slot(name, resource, gpu, None, None, reps,
                            tuple(sorted(holders.get((resource, gpu, None), ())))))
    out.sort(key=lambda s: (s.resource, natural_key(s.gpu), natural_key(s.instance or "")))
    return tuple(out)


def natural_key(text):
    """Sort key that orders "2" before "10" (device and instance ids)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def holds_devices(pod):
    """Whether ``pod`` is bound to a node and not finished (so it holds what it requests)."""
    return bool((pod.get("spec") or {}).get("nodeName")) and (
        (pod.get("status") or {}).get("phase") not in TERMINAL_PHASES)


def build_node(node, pods):
    """:class:`NodeDevices` of ``node`` and the pods bound to it (pure; ``pods`` may hold any)."""
    node_reps = {}
    holders, held, unplaced = {}, {}, []
    for pod in pods:
        requests = device_requests(pod)
        if not requests or not holds_devices(pod):
            continue
        meta = pod["metadata"]
        who = (meta.get("namespace", ""), meta["name"])
        held[who] = (pod, requests)
        ids = _annotation(pod)
        for resource, units in requests.items():
            if resource not in node_reps:
                node_reps[resource] = replicas(node, resource)
            got = ids.get(resource)
            if not isinstance(got, list) or not got:
                unplaced.append((who, resource, units))
                continue
            for device_id in got:
                gpu, instance = parse_device_id(resource, device_id, node_reps[resource])
                bucket = holders.setdefault((resource, gpu, instance), [])
                if who not in bucket:
                    bucket.append(who)
    return NodeDevices(node["metadata"]["name"], (node.get("metadata") or {}).get("labels") or {},
                       node_slots(node, holders), held, tuple(sorted(unplaced)))


class DeviceIndex(FollowsNodesAndPods):
    """Every node's :class:`NodeDevices`, kept from the shared Node and Pod caches.

    Listens to both caches; an event marks its node dirty, and :meth:`nodes` rebuilds only dirty
    nodes (pure :func:`build_node` over the node's own pods). ``version`` grows on every change
    that matters, so consumers can memoize on it. Pods that hold no devices are ignored, and a
    node heartbeat that changes neither labels, annotations nor allocatable marks nothing dirty.
    """

    def __init__(self, *, node_cache=None, pod_cache=None):
        self.node_cache = node_cache if node_cache is not None else WatchCache.shared("nodes")
        self.pod_cache = pod_cache if pod_cache is not None else WatchCache.shared("pods")
        self._nodes = {}  # name -> node dict
        self._shapes = {}  # name -> what of the node decides its slots
        self._pods = {}  # node name -> {pod key: pod}
        self._pod_node = {}  # pod key -> node name
        self._built = {}  # name -> NodeDevices
        self._dirty = set()
        self._listing = None
        self.version = 0
        self._names = None  # sorted names of built nodes; None after one joined or left
        self._log = []  # (version, node name) of every rebuild, for changes_since
        self._log_start = 0  # the version before the oldest entry kept
        self.follow_caches()

    def _changed(self, name):
        self._dirty.add(name)
        self._listing = None
        self.version += 1

    def changes_since(self, version):
        """Names of the nodes rebuilt or removed after ``version`` (a :attr:`version` read
        earlier), or None when that is too long ago to tell (then treat every node as changed)."""
        self._refresh()
        if version < self._log_start:
            return None
        start = bisect.bisect_right(self._log, version, key=lambda entry: entry[0])
        return {name for _, name in self._log[start:]}

    @staticmethod
    def _shape(node):
        meta = node.get("metadata") or {}
        return (meta.get("labels"), (meta.get("annotations") or {}).get(DEVICES_ANNOTATION),
                (node.get("status") or {}).get("allocatable"))

    def on_node_event(self, event_type, node, old):
        name = node["metadata"]["name"]
        if event_type == "DELETED":
            if self._nodes.pop(name, None) is not None:
                self._shapes.pop(name, None)
                self._changed(name)
            return
        shape = self._shape(node)
        self._nodes[name] = node
        if self._shapes.get(name) != shape:
            self._shapes[name] = shape
            self._changed(name)

    def on_pod_event(self, event_type, pod, old):
        key = object_key(pod)
        previous = self._pod_node.get(key)
        holds = event_type != "DELETED" and holds_devices(pod) and bool(device_requests(pod))
        current = pod["spec"]["nodeName"] if holds else None
        if previous is not None and previous != current:
            self._pods.get(previous, {}).pop(key, None)
            del self._pod_node[key]
            self._changed(previous)
        if current is not None:
            pods = self._pods.setdefault(current, {})
            before = pods.get(key)
            pods[key] = pod
            self._pod_node[key] = current
            if before is None or _holding(before) != _holding(pod):
                self._changed(current)

    def node(self, name):
        """The :class:`NodeDevices` of node ``name``, or None."""
        self._refresh()
        return self._built.get(name)

    def nodes(self):
        """Every node with devices, sorted by name (a memoized list; treat it as read-only)."""
        self._refresh()
        if self._listing is None:
            if self._names is None:
                self._names = sorted(self._built)
            self._listing = [self._built[n] for n in self._names]
        return self._listing

    def node_object(self, name):
        """The Node dict of ``name`` from the cache, or None."""
        return self._nodes.get(name)

    def pods_on(self, name):
        """The device-holding pods bound to node ``name`` (dicts from the cache)."""
        return list(self._pods.get(name, {}).values())

    def _refresh(self):
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        for name in dirty:
            node = self._nodes.get(name)
            built = build_node(node, self._pods.get(name, {}).values()) if node else None
            if built is None or not built.slots and not built.pods:
                if self._built.pop(name, None) is not None:
                    self._names = None
            else:
                if name not in self._built:
                    self._names = None
                self._built[name] = built
            self._log.append((self.version, name))
        if len(self._log) > 20000:
            drop = len(self._log) - 10000
            self._log_start = self._log[drop - 1][0]
            del self._log[:drop]


def _holding(pod):
    """What of a pod decides its slots: its device ids (annotation) and its requests."""
    return (((pod.get("metadata") or {}).get("annotations") or {}).get(DEVICES_ANNOTATION),
            tuple(device_requests(pod).items()))


def fraction_text(value):
    """``"1/7"`` for a GPU share (for display), ``"1"`` for a whole GPU."""
    f = Fraction(value).limit_denominator(64)
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


_shared = {}


def shared_device_index():
    """The device index of the running loop, on the shared Node and Pod caches."""
    loop = asyncio.get_running_loop()
    for key in [k for k in _shared if k.is_closed()]:
        del _shared[key]
    index = _shared.get(loop)
    if index is None:
        index = _shared[loop] = DeviceIndex()
    return index
