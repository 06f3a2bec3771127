"""Nodes from a cluster file: the machines localkube pretends to have.

A cluster file is YAML::

    nodes:
      - name: gpu-a100-0                 # required, a DNS-1123 subdomain
        capacity:                        # required: cpu and memory, plus any extended resource
          cpu: 64
          memory: 512Gi
          nvidia.com/gpu: 4
        allocatable: {cpu: 62}           # optional, per resource; defaults to capacity
        labels:                          # optional; values may be strings or numbers
          nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB
        annotations: {}                  # optional
        taints:                          # optional
          - {key: nvidia.com/gpu, value: present, effect: NoSchedule}
        unschedulable: false             # optional: cordoned
        instanceType: p4d.24xlarge       # optional: node.kubernetes.io/instance-type
        arch: amd64                      # optional; defaults to this machine's
        devices:                         # optional, per extended resource
          nvidia.com/gpu:
            env: NVIDIA_VISIBLE_DEVICES  # the variable the kubelet sets (see devices.py)
            ids: ["0", "1", "2", "3"]    # one per allocatable unit; default "0".."N-1"

A time-sliced node says so as the NVIDIA device plugin labels it: ``nvidia.com/gpu.replicas: 4``
with ``capacity: {nvidia.com/gpu: 8}`` (physical × replicas; ``nvidia.com/gpu.count``, when
given, must be the physical count). A MIG node (``nvidia.com/mig.strategy: mixed``) has
``nvidia.com/mig-<profile>`` resources whose ``devices.<resource>.ids`` are required and name
each instance's parent GPU, ``"<gpu>:<gi>"`` (see devices.py)::

        capacity: {nvidia.com/mig-1g.10gb: 4, nvidia.com/mig-3g.40gb: 1, nvidia.com/gpu: 1}
        devices:
          nvidia.com/mig-1g.10gb: {ids: ["0:9", "0:10", "0:11", "0:12"]}
          nvidia.com/mig-3g.40gb: {ids: ["0:2"]}
          nvidia.com/gpu: {ids: ["1"]}

``pods`` defaults to 110, as a real kubelet's ``--max-pods``. Every node is Ready and reports this
machine's kernel and OS, since the kubelet really runs pods here. A mistake is a ValueError naming
the offending key (``nodes[1].capacity.cpu: ...``), so a typo fails at start, not at the first spawn.
"""

import json
import platform
import re
import uuid

from crater_hub.quantity import parse_quantity

from .devices import COUNT_LABEL, DEVICES_ANNOTATION, MIG_PREFIX, REPLICAS_LABEL, is_device_resource
from .store import isotime

KUBELET_VERSION = "v1.31.0-localkube"
DEFAULT_PODS = "110"
NODE_KEYS = {
    "name",
    "capacity",
    "allocatable",
    "labels",
    "annotations",
    "taints",
    "unschedulable",
    "instanceType",
    "arch",
    "devices",
}
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}


def _os_image():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def _mapping(value, where):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _label_value(value, where):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ValueError(f"{where}: expected a string, got {type(value).__name__}")


def _resources(value, where):
    """Quantities of a capacity/allocatable mapping, as canonical strings and exact values."""
    out = {}
    for name, raw in _mapping(value, where).items():
        try:
            amount = parse_quantity(raw)
        except ValueError as e:
            raise ValueError(f"{where}.{name}: {e}") from None
        if amount < 0:
            raise ValueError(f"{where}.{name}: must not be negative, got {raw!r}")
        if is_device_resource(name) and amount.denominator != 1:
            raise ValueError(
                f"{where}.{name}: extended resources are counted in whole devices, got {raw!r}"
            )
        out[name] = (str(raw), amount)
    return out


def _taints(value, where):
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list of {{key, value, effect}}")
    taints = []
    for i, t in enumerate(value):
        at = f"{where}[{i}]"
        t = _mapping(t, at)
        unknown = set(t) - {"key", "value", "effect"}
        if unknown:
            raise ValueError(
                f"{at}.{sorted(unknown)[0]}: unknown key; a taint has key, value and effect"
            )
        if not t.get("key") or not isinstance(t["key"], str):
            raise ValueError(f"{at}.key: required")
        if t.get("effect") not in TAINT_EFFECTS:
            raise ValueError(
                f"{at}.effect: must be one of {', '.join(TAINT_EFFECTS)}, got {t.get('effect')!r}"
            )
        taint = {"key": t["key"], "effect": t["effect"]}
        if t.get("value") not in (None, ""):
            taint["value"] = _label_value(t["value"], f"{at}.value")
        if t["effect"] == "NoExecute":
            taint["timeAdded"] = isotime()
        taints.append(taint)
    return taints


def _devices(value, where, allocatable):
    """The ``devices`` section, checked against the node's allocatable extended resources."""
    out = {}
    for resource, conf in _mapping(value, where).items():
        at = f"{where}.{resource}"
        conf = _mapping(conf, at)
        if not is_device_resource(resource):
            raise ValueError(
                f"{at}: not an extended resource (expected a name like nvidia.com/gpu)"
            )
        if resource not in allocatable:
            raise ValueError(f"{at}: the node has no {resource} in its capacity")
        unknown = set(conf) - {"env", "ids"}
        if unknown:
            raise ValueError(f"{at}.{sorted(unknown)[0]}: unknown key; devices take env and ids")
        entry = {}
        if "env" in conf:
            if not isinstance(conf["env"], str) or not re.match(
                r"^[A-Za-z_][A-Za-z0-9_]*$", conf["env"]
            ):
                raise ValueError(
                    f"{at}.env: expected an environment variable name, got {conf['env']!r}"
                )
            entry["env"] = conf["env"]
        if "ids" in conf:
            ids = conf["ids"]
            if not isinstance(ids, list):
                raise ValueError(f"{at}.ids: expected a list of device ids")
            ids = [_label_value(i, f"{at}.ids") for i in ids]
            if len(set(ids)) != len(ids):
                raise ValueError(f"{at}.ids: device ids must be distinct")
            count = int(allocatable[resource][1])
            if len(ids) != count:
                raise ValueError(f"{at}.ids: {len(ids)} ids for {count} allocatable {resource}")
            entry["ids"] = ids
        out[resource] = entry
    return out


_MIG_ID = re.compile(r"^[0-9]+:[0-9]+$")


def _check_sharing(where, labels, allocatable, devices):
    """Time-slicing labels agree with the allocatable count; MIG instances name their parent."""
    gpus = allocatable.get("nvidia.com/gpu")
    raw = labels.get(REPLICAS_LABEL)
    if raw is not None:
        at = f"{where}.labels.{REPLICAS_LABEL}"
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{at}: expected a whole number of replicas per GPU, got {raw!r}")
        replicas = int(raw)
        total = int(gpus[1]) if gpus else 0
        if total % replicas:
            raise ValueError(
                f"{at}: nvidia.com/gpu {total} is not a whole number of GPUs × {replicas} replicas"
            )
        count = labels.get(COUNT_LABEL)
        if count is not None and count != str(total // replicas):
            raise ValueError(
                f"{where}.labels.{COUNT_LABEL}: {count} physical GPUs, but nvidia.com/gpu"
                f" {total} / {replicas} replicas is {total // replicas}"
            )
        if replicas > 1 and (devices.get("nvidia.com/gpu") or {}).get("ids"):
            raise ValueError(
                f"{where}.devices.nvidia.com/gpu.ids: time-sliced GPUs are named by localkube"
                " (<gpu>::<replica>); leave ids out"
            )
    instances = {}
    for resource in allocatable:
        if not resource.startswith(MIG_PREFIX) or int(allocatable[resource][1]) == 0:
            continue
        ids = (devices.get(resource) or {}).get("ids")
        at = f"{where}.devices.{resource}.ids"
        if ids is None:
            raise ValueError(
                f"{at}: required for MIG resources: each instance as <gpu>:<gi>, e.g. [\"0:7\"]"
            )
        for device_id in ids:
            if not _MIG_ID.match(device_id):
                raise ValueError(f"{at}: {device_id!r} is not <gpu>:<gi> (like \"0:7\")")
            if device_id in instances:
                raise ValueError(f"{at}: {device_id} is already an instance of {instances[device_id]}")
            instances[device_id] = resource


def node_from_entry(entry, where, now=None):
    """One core/v1 Node from one validated ``nodes[]`` entry of a cluster file."""
    entry = _mapping(entry, where)
    unknown = set(entry) - NODE_KEYS
    if unknown:
        raise ValueError(
            f"{where}.{sorted(unknown)[0]}: unknown key; allowed: {', '.join(sorted(NODE_KEYS))}"
        )
    name = entry.get("name")
    if not isinstance(name, str) or len(name) > 253 or not _NAME.match(name):
        raise ValueError(
            f"{where}.name: required, a lowercase DNS-1123 name (like gpu-a100-0), got {name!r}"
        )
    capacity = _resources(entry.get("capacity"), f"{where}.capacity")
    for required in ("cpu", "memory"):
        if required not in capacity:
            raise ValueError(f"{where}.capacity.{required}: required")
    capacity.setdefault("pods", (DEFAULT_PODS, parse_quantity(DEFAULT_PODS)))
    allocatable = dict(capacity)
    for res_name, (raw, amount) in _resources(
        entry.get("allocatable"), f"{where}.allocatable"
    ).items():
        if res_name not in capacity:
            raise ValueError(f"{where}.allocatable.{res_name}: not in the node's capacity")
        if amount > capacity[res_name][1]:
            raise ValueError(
                f"{where}.allocatable.{res_name}: {raw} exceeds capacity {capacity[res_name][0]}"
            )
        allocatable[res_name] = (raw, amount)
    devices = _devices(entry.get("devices"), f"{where}.devices", allocatable)
    arch = entry.get("arch") or _ARCH.get(platform.machine(), platform.machine())
    labels = {
        k: _label_value(v, f"{where}.labels.{k}")
        for k, v in _mapping(entry.get("labels"), f"{where}.labels").items()
    }
    _check_sharing(where, labels, allocatable, devices)
    if int(labels.get(REPLICAS_LABEL, "1")) > 1:
        labels.setdefault("nvidia.com/gpu.sharing-strategy", "time-slicing")
    labels = {
        "beta.kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        **(
            {"node.kubernetes.io/instance-type": str(entry["instanceType"])}
            if entry.get("instanceType")
            else {}
        ),
        **labels,
    }
    annotations = {
        k: _label_value(v, f"{where}.annotations.{k}")
        for k, v in _mapping(entry.get("annotations"), f"{where}.annotations").items()
    }
    annotations["node.alpha.kubernetes.io/ttl"] = "0"
    if devices:
        annotations[DEVICES_ANNOTATION] = json.dumps(devices, sort_keys=True)
    spec = {}
    taints = _taints(entry.get("taints"), f"{where}.taints")
    if taints:
        spec["taints"] = taints
    if entry.get("unschedulable"):
        spec["unschedulable"] = True
    now = now or isotime()

    def condition(type_, status, reason, message):
        return {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }

    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": spec,
        "status": {
            "capacity": {k: raw for k, (raw, _) in capacity.items()},
            "allocatable": {k: raw for k, (raw, _) in allocatable.items()},
            "conditions": [
                condition(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                condition(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
                condition(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": arch,
                "bootID": str(uuid.uuid4()),
                "containerRuntimeVersion": "localkube://1.0",
                "kernelVersion": platform.release(),
                "kubeProxyVersion": KUBELET_VERSION,
                "kubeletVersion": KUBELET_VERSION,
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.localkube").hex,
                "operatingSystem": "linux",
                "osImage": _os_image(),
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"localkube:node:{name}")),
            },
        },
    }


def nodes_from_cluster_spec(spec):
    """The Node objects a parsed cluster file describes; ValueError naming the bad key otherwise."""
    spec = _mapping(spec, "cluster file")
    unknown = set(spec) - {"nodes"}
    if unknown:
        raise ValueError(f"cluster file: unknown key {sorted(unknown)[0]!r}; expected 'nodes'")
    entries = spec.get("nodes")
    if not isinstance(entries, list) or not entries:
        raise ValueError("cluster file: nodes: required, a non-empty list of nodes")
    now = isotime()
    nodes, seen = [], set()
    for i, entry in enumerate(entries):
        node = node_from_entry(entry, f"nodes[{i}]", now=now)
        name = node["metadata"]["name"]
        if name in seen:
            raise ValueError(f"nodes[{i}].name: duplicate node name {name!r}")
        seen.add(name)
        nodes.append(node)
    return nodes
