"""Device assignment, as a device plugin and the kubelet's device manager would do it.

On a real node a device plugin advertises N units of an extended resource (``nvidia.com/gpu: 4``)
and, when a pod is admitted, hands each unit out as a specific device, visible to the container
through an environment variable (``NVIDIA_VISIBLE_DEVICES=0,1``). Here the scheduler picks the
devices when it binds, records them on the pod as the annotation :data:`DEVICES_ANNOTATION`
(``{"nvidia.com/gpu": ["0", "1"]}``), and the kubelet turns that into the environment with
:func:`device_env_for_pod`. Recording them on the pod lets later features (GPU heatmaps,
accounting) map devices to pods from the API alone.

Device ids default to ``"0"`` .. ``"N-1"`` for N allocatable units; a cluster file may name them
and the variable per node (``devices.<resource>.{ids, env}``), stored on the Node under the same
annotation key as ``{"nvidia.com/gpu": {"ids": [...], "env": "..."}}``.

NVIDIA's two ways of sharing a GPU, as the NVIDIA device plugin presents them:

- **time-slicing**: a node labelled ``nvidia.com/gpu.replicas: "4"`` advertises each physical GPU
  4 times (``nvidia.com/gpu: 8`` for 2 GPUs). Device ids are ``"<gpu>::<replica>"``, ordered
  replica by replica (``"0::0", "1::0", "0::1"`` …) so that lowest-first assignment spreads pods
  over the physical GPUs before doubling up; the container sees the physical ids
  (``NVIDIA_VISIBLE_DEVICES=0``).
- **MIG** (mixed strategy): each ``nvidia.com/mig-<profile>`` unit is a GPU instance on a parent
  GPU, named ``"<gpu>:<gi>"`` by the cluster file (``ids: ["0:7", "0:8"]``: instances 7 and 8 of
  GPU 0); the container sees ``NVIDIA_VISIBLE_DEVICES=MIG-0:7``.
"""

import json
import math

from crater_hub.quantity import parse_quantity

DEVICES_ANNOTATION = "localkube.crater.io/devices"
REPLICAS_LABEL = "nvidia.com/gpu.replicas"
COUNT_LABEL = "nvidia.com/gpu.count"
MIG_PREFIX = "nvidia.com/mig-"

# The variable each vendor's container toolkit reads, by resource-name prefix (first match wins).
DEFAULT_ENV = (
    ("nvidia.com/", "NVIDIA_VISIBLE_DEVICES"),
    ("amd.com/gpu", "ROCR_VISIBLE_DEVICES"),
    ("huawei.com/Ascend", "ASCEND_VISIBLE_DEVICES"),
)

# kube-scheduler scores pods that request nothing as if they asked for this much.
NON_ZERO_DEFAULTS = {"cpu": parse_quantity("100m"), "memory": parse_quantity("200Mi")}


def is_device_resource(name):
    """Whether ``name`` is an extended resource (``vendor.com/thing``), handed out as devices.

    Kubernetes-native names (``kubernetes.io/...``, ``*.kubernetes.io/...``, and unprefixed ones
    like ``cpu`` or ``hugepages-2Mi``) are not; nor are quota names (``requests.*``).
    """
    domain, slash, _ = name.partition("/")
    if not slash or name.startswith("requests."):
        return False
    return domain != "kubernetes.io" and not domain.endswith(".kubernetes.io")


def _container_requests(container, non_zero):
    resources = container.get("resources") or {}
    out = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    out = {k: parse_quantity(v) for k, v in out.items()}
    if non_zero:
        for k, v in NON_ZERO_DEFAULTS.items():
            if not out.get(k):
                out[k] = v
    return out


def pod_requests(pod, non_zero=False):
    """What a pod asks of a node, as kube-scheduler and the device manager compute it.

    The sum over containers, raised to the largest init container's request where that is more
    (init containers run one at a time, before the others); sidecars (init containers with
    ``restartPolicy: Always``) keep running and add to both. Plus ``spec.overhead``. A resource
    given only as a limit counts as requested. With ``non_zero``, containers without cpu or
    memory requests count as 100m and 200Mi (kube-scheduler's scoring defaults).
    """
    spec = pod.get("spec") or {}
    total, sidecars, init_peak = {}, {}, {}
    for c in spec.get("containers") or []:
        for k, v in _container_requests(c, non_zero).items():
            total[k] = total.get(k, 0) + v
    for c in spec.get("initContainers") or []:
        req = _container_requests(c, non_zero)
        if c.get("restartPolicy") == "Always":
            for k, v in req.items():
                sidecars[k] = sidecars.get(k, 0) + v
            continue
        for k, v in req.items():
            init_peak[k] = max(init_peak.get(k, 0), v + sidecars.get(k, 0))
    for k, v in sidecars.items():
        total[k] = total.get(k, 0) + v
    for k, v in init_peak.items():
        total[k] = max(total.get(k, 0), v)
    for k, v in (spec.get("overhead") or {}).items():
        total[k] = total.get(k, 0) + parse_quantity(v)
    return total


def _node_config(node):
    raw = ((node.get("metadata") or {}).get("annotations") or {}).get(DEVICES_ANNOTATION)
    return json.loads(raw) if raw else {}


def replicas(node):
    """How many times each physical GPU of ``node`` is advertised (time-slicing), 1 if not shared."""
    raw = ((node.get("metadata") or {}).get("labels") or {}).get(REPLICAS_LABEL, "1")
    try:
        return max(int(raw), 1)
    except ValueError:
        return 1


def device_ids(node, resource):
    """The ids of a node's devices of ``resource``: from the cluster file, time-sliced replicas
    (``"<gpu>::<replica>"``), or ``"0"``..``"N-1"``."""
    ids = _node_config(node).get(resource, {}).get("ids")
    if ids is not None:
        return list(ids)
    amount = (node.get("status") or {}).get("allocatable", {}).get(resource, "0")
    count = math.floor(parse_quantity(amount))
    shared = replicas(node)
    if resource == "nvidia.com/gpu" and shared > 1:
        return [f"{g}::{r}" for r in range(shared) for g in range(count // shared)]
    return [str(i) for i in range(count)]


def physical(device_id):
    """``(gpu, instance)`` of a device id: ``"1::2"`` → ``("1", None)`` (replica 2 of GPU 1),
    ``"0:7"`` → ``("0", "7")`` (MIG instance 7 of GPU 0), ``"3"`` → ``("3", None)``."""
    if "::" in device_id:
        return device_id.split("::", 1)[0], None
    if ":" in device_id:
        gpu, gi = device_id.split(":", 1)
        return gpu, gi
    return device_id, None


def visible_id(device_id):
    """What the container toolkit puts in the variable for a device: the physical GPU of a
    replica, ``MIG-<gpu>:<gi>`` for a MIG instance, the id itself otherwise."""
    gpu, gi = physical(device_id)
    return f"MIG-{gpu}:{gi}" if gi is not None else gpu


def pod_devices(pod):
    """The devices a pod holds, ``{resource: [ids]}``, as the scheduler recorded them."""
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(DEVICES_ANNOTATION)
    return json.loads(raw) if raw else {}


def assign(node, pod, pods_on_node):
    """Free devices for every extended resource ``pod`` requests on ``node``, lowest ids first.

    ``pods_on_node``: the pods bound to the node that still hold their devices (not terminal).
    Returns ``{resource: [ids]}`` (empty when the pod asks for no devices), or None when some
    resource has fewer free devices than requested.
    """
    wanted = {
        r: math.ceil(q) for r, q in pod_requests(pod).items() if is_device_resource(r) and q > 0
    }
    uid = pod["metadata"].get("uid")
    used = {}
    for other in pods_on_node:
        if other["metadata"].get("uid") == uid:
            continue
        for resource, ids in pod_devices(other).items():
            used.setdefault(resource, set()).update(ids)
    out = {}
    for resource, count in sorted(wanted.items()):
        free = [i for i in device_ids(node, resource) if i not in used.get(resource, ())]
        if len(free) < count:
            return None
        out[resource] = free[:count]
    return out


def device_env(resource, node):
    """The environment variable that exposes devices of ``resource`` on ``node``, or None."""
    env = _node_config(node).get(resource, {}).get("env")
    if env:
        return env
    for prefix, name in DEFAULT_ENV:
        if resource.startswith(prefix):
            return name
    return None


def device_env_for_pod(pod, node):
    """The variables the kubelet sets in every container of ``pod``: ``{"NVIDIA_VISIBLE_DEVICES": "0,1"}``.

    A pod without devices gets nothing (not ``void``): like a pod on a node without the toolkit.
    Resources sharing a variable (``nvidia.com/gpu`` and MIG slices) are joined into one list;
    replicas and MIG instances appear as :func:`visible_id` names them.
    """
    values = {}
    for resource, ids in sorted(pod_devices(pod).items()):
        name = device_env(resource, node)
        if name and ids:
            seen = values.setdefault(name, [])
            for device_id in ids:  # two replicas of one GPU are one visible device
                shown = visible_id(device_id) if resource.startswith("nvidia.com/") else device_id
                if shown not in seen:
                    seen.append(shown)
    return {name: ",".join(ids) for name, ids in values.items()}
