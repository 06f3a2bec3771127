"""What KubeRay's operator builds from a ``ray.io/v1`` RayCluster: pods, head Service, token Secret.

Pure functions of the RayCluster object (no store), written after KubeRay's
``controllers/ray/common/pod.go`` and ``service.go`` (1.5/1.6) for the fields crater uses, so that
a cluster made here looks, to the pods and to whoever reads them, like one KubeRay made:

- names: the head pod ``<cluster>-head-<5>``, workers ``<cluster>-<group>-worker-<5>``, the head
  Service ``<cluster>-head-svc`` (or ``headService.metadata.name``), the token Secret ``<cluster>``;
- labels ``ray.io/cluster``, ``ray.io/node-type``, ``ray.io/group``, ``ray.io/is-ray-node``,
  ``ray.io/identifier`` and KubeRay's ``app.kubernetes.io`` pair; template labels kept;
- the Ray container (the first) runs ``/bin/bash -c -- "ulimit ...; ray start ..."`` built from
  ``rayStartParams`` plus what KubeRay derives (``--head --dashboard-host=0.0.0.0``, ``--address``
  of the head Service for workers, ``--num-cpus``/``--memory``/``--num-gpus`` from the limits,
  ``--block``, metrics and agent ports); a container command that already says ``ray start`` is
  left alone, other commands run before it;
- env: ``RAY_ADDRESS``, ``FQ_RAY_IP``/``RAY_IP`` (workers), ``RAY_CLUSTER_NAME``,
  ``RAY_CLUSTER_NAMESPACE``, ``RAY_PORT``, ``KUBERAY_GEN_RAY_START_CMD``…, and with
  ``authOptions.mode: token`` ``RAY_AUTH_MODE=token`` + ``RAY_AUTH_TOKEN`` from the Secret (key
  ``auth_token``), in the Ray container and in init containers;
- ``/dev/shm`` as a memory emptyDir, a ``metrics`` container port, and workers' ``wait-gcs-ready``
  init container (``ray health-check`` against the head Service until the GCS answers).

- KubeRay's readiness and liveness probes (Ray >= 2.53: ``httpGet`` on the agent's
  ``/api/healthz``; older: ``exec`` of wget against the raylet/GCS health URLs), unless set.

Not built (see the README's deviations): the autoscaler sidecar, GCS fault tolerance, TLS,
Ingress/Route, the serve and headless worker Services, top-level group ``resources``/``labels``.
"""

import base64
import copy
import math
import secrets

from crater_hub.quantity import format_cpu, format_memory, parse_quantity

LABEL_CLUSTER = "ray.io/cluster"
LABEL_NODE_TYPE = "ray.io/node-type"
LABEL_GROUP = "ray.io/group"
LABEL_IS_NODE = "ray.io/is-ray-node"
LABEL_IDENTIFIER = "ray.io/identifier"
HEAD_GROUP = "headgroup"
GCS_PORT, DASHBOARD_PORT, CLIENT_PORT, METRICS_PORT, SERVE_PORT = 6379, 8265, 10001, 8080, 8000
AGENT_PORT = 52365
TOKEN_KEY = "auth_token"
NAME_PREFIX_MAX = 50  # 63 - len("-worker-") - 5 random characters


def head_service_name(rc):
    spec = rc["spec"]["headGroupSpec"]
    custom = ((spec.get("headService") or {}).get("metadata") or {}).get("name")
    return custom or f"{rc['metadata']['name']}-head-svc"


def head_fqdn(rc):
    return f"{head_service_name(rc)}.{rc['metadata']['namespace']}.svc.cluster.local"


def head_port(rc):
    return str((rc["spec"]["headGroupSpec"].get("rayStartParams") or {}).get("port", GCS_PORT))


def token_enabled(rc):
    return ((rc["spec"].get("authOptions") or {}).get("mode")) == "token"


def token_secret_name(rc):
    """The Secret holding the token: ``authOptions.secretName`` (the user's) or ``<cluster>``."""
    custom = (rc["spec"].get("authOptions") or {}).get("secretName")
    return custom or check_name(rc["metadata"]["name"])


def check_name(name):
    """KubeRay's CheckName: at most 50 characters (cut from the front), not starting with a digit."""
    name = name[-NAME_PREFIX_MAX:]
    return "r" + name[1:] if name[0].isdigit() or not name[0].isalnum() else name


def pod_name_prefix(prefix, node_type):
    return f"{prefix[:NAME_PREFIX_MAX]}-{node_type}-".lower()


def node_labels(rc, node_type, group, template_labels):
    name = rc["metadata"]["name"]
    labels = dict(template_labels or {})
    for fixed in (LABEL_NODE_TYPE, LABEL_GROUP, LABEL_CLUSTER):
        labels.pop(fixed, None)  # not overridable
    base = {
        LABEL_IS_NODE: "yes", LABEL_CLUSTER: name, LABEL_NODE_TYPE: node_type, LABEL_GROUP: group,
        LABEL_IDENTIFIER: f"{name}-{node_type}"[:63],
        "app.kubernetes.io/name": "kuberay", "app.kubernetes.io/created-by": "kuberay-operator",
    }
    return {**base, **labels, LABEL_NODE_TYPE: node_type, LABEL_GROUP: group, LABEL_CLUSTER: name}


def owner_reference(rc):
    return {"apiVersion": rc.get("apiVersion", "ray.io/v1"), "kind": "RayCluster",
            "name": rc["metadata"]["name"], "uid": rc["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


def desired_replicas(group):
    """KubeRay's GetWorkerGroupDesiredReplicas: replicas within [min, max], times numOfHosts."""
    if group.get("suspend"):
        return 0
    low = group.get("minReplicas") or 0
    high = group.get("maxReplicas", 2**31 - 1)
    replicas = group.get("replicas")
    want = low if replicas is None or replicas < low else min(replicas, high)
    return want * max(group.get("numOfHosts") or 1, 1)


def desired_resources(rc):
    """KubeRay's CalculateDesiredResources: each pod's requests (limits where no request), head
    plus every group's ``replicas`` × ``numOfHosts``; as ``desiredCPU``/``Memory``/``GPU``."""
    total = {}

    def add(template, times):
        for container in ((template or {}).get("spec") or {}).get("containers") or []:
            resources = container.get("resources") or {}
            merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
            for name, value in merged.items():
                total[name] = total.get(name, 0) + parse_quantity(value) * times

    add(rc["spec"]["headGroupSpec"].get("template"), 1)
    for group in rc["spec"].get("workerGroupSpecs") or []:
        if not group.get("suspend"):
            add(group.get("template"), (group.get("replicas") or 0) * max(group.get("numOfHosts") or 1, 1))
    return {"desiredCPU": format_cpu(total.get("cpu", 0)), "desiredMemory": format_memory(total.get("memory", 0)),
            "desiredGPU": format_cpu(sum(v for k, v in total.items() if _is_gpu(k))),
            "desiredTPU": format_cpu(total.get("google.com/tpu", 0))}


# -- ray start ----------------------------------------------------------------------------------


def _quantity(resources, kind, name):
    value = (resources.get(kind) or {}).get(name)
    return parse_quantity(value) if value is not None else 0


def _is_gpu(name):
    import re

    return name.endswith("gpu") or re.search(r"nvidia\.com/mig-\d+g\.\d+gb$", name) is not None


def start_params(rc, node_type, params, resources):
    """rayStartParams completed as KubeRay's setMissingRayStartParams and generateRayStartCommand."""
    params = {str(k): str(v) for k, v in (params or {}).items()}
    if node_type == "worker":
        params.setdefault("address", f"{head_fqdn(rc)}:{head_port(rc)}")
    else:
        params.setdefault("dashboard-host", "0.0.0.0")
    params.setdefault("metrics-export-port", str(METRICS_PORT))
    params["block"] = "true"
    params.setdefault("dashboard-agent-listen-port", str(AGENT_PORT))
    if "num-cpus" not in params:
        cpu = _quantity(resources, "limits", "cpu") or _quantity(resources, "requests", "cpu")
        if cpu:
            params["num-cpus"] = str(math.ceil(cpu))
    if "memory" not in params:
        memory = _quantity(resources, "limits", "memory")
        if memory:
            params["memory"] = str(math.ceil(memory))
    if "num-gpus" not in params:
        for name in sorted(resources.get("limits") or {}):
            amount = _quantity(resources, "limits", name)
            if _is_gpu(name) and amount:
                params["num-gpus"] = str(math.ceil(amount))
                break
    return params


def start_command(node_type, params):
    """``ray start [--head] --k=v ...`` with KubeRay's flag rules (sorted; "true" is a bare flag,
    "false" is dropped except for the options that take the word)."""
    keep_bool = ("log-color", "include-dashboard", "include-log-monitor")
    flags = []
    for key in sorted(params):
        value = params[key]
        if value.lower() in ("true", "false") and key not in keep_bool:
            if value.lower() == "true":
                flags.append(f"--{key}")
        else:
            flags.append(f"--{key}={value}")
    head = " --head" if node_type == "head" else ""
    return f"ray start{head} {' '.join(flags)}"


# -- pods ---------------------------------------------------------------------------------------


def _env_set(container, name, value=None, value_from=None, override=False):
    env = container.setdefault("env", [])
    if any(e["name"] == name for e in env):
        if not override:
            return
        env[:] = [e for e in env if e["name"] != name]
    env.append({"name": name, **({"valueFrom": value_from} if value_from else {"value": value})})


def _token_env(rc, container):
    _env_set(container, "RAY_AUTH_MODE", "token")
    _env_set(container, "RAY_AUTH_TOKEN", value_from={
        "secretKeyRef": {"name": token_secret_name(rc), "key": TOKEN_KEY}})


def _add_shm(pod, container):
    if any(m.get("mountPath") == "/dev/shm" for m in container.get("volumeMounts") or []):
        return
    volumes = pod["spec"].setdefault("volumes", [])
    if not any(v["name"] == "shared-mem" for v in volumes):
        resources = container.get("resources") or {}
        size = (resources.get("requests") or {}).get("memory") or (resources.get("limits") or {}).get("memory")
        empty = {"medium": "Memory", **({"sizeLimit": size} if size else {})}
        volumes.append({"name": "shared-mem", "emptyDir": empty})
    container.setdefault("volumeMounts", []).append({"name": "shared-mem", "mountPath": "/dev/shm"})


def _wait_gcs_init(rc, ray):
    address = f"{head_fqdn(rc)}:{head_port(rc)}"
    script = (
        "SECONDS=0\n"
        "while true; do\n"
        f"  if ray health-check --address {address} > /dev/null 2>&1; then echo 'GCS is ready.'; break; fi\n"
        "  echo \"$SECONDS seconds elapsed: Waiting for GCS to be ready.\"\n"
        "  sleep 5\n"
        "done\n")
    return {
        "name": "wait-gcs-ready", "image": ray["image"],
        **({"imagePullPolicy": ray["imagePullPolicy"]} if ray.get("imagePullPolicy") else {}),
        "command": ["/bin/bash", "-c", "--"], "args": [script],
        "env": copy.deepcopy(ray.get("env") or []),
        "volumeMounts": copy.deepcopy(ray.get("volumeMounts") or []),
        "resources": {"limits": {"cpu": "200m", "memory": "256Mi"},
                      "requests": {"cpu": "200m", "memory": "256Mi"}},
    }


def _version(text):
    parts = []
    for piece in str(text or "").split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts) if parts else ()


def _probes(rc, node_type, ray, params):
    """KubeRay's initLivenessAndReadinessProbe: one HTTP health URL from Ray 2.53 on."""
    agent = int(params.get("dashboard-agent-listen-port", AGENT_PORT))
    version = _version(rc["spec"].get("rayVersion"))
    if not version or version >= (2, 53, 0):
        action = {"httpGet": {"path": "/api/healthz", "port": agent}}
    else:
        wget = "wget --tries 1 -T {t} -q -O- http://localhost:{p}/{path} | grep success"
        checks = [wget.format(t=2, p=agent, path="api/local_raylet_healthz")]
        if node_type == "head":
            checks.append(wget.format(t=10, p=params.get("dashboard-port", DASHBOARD_PORT), path="api/gcs_healthz"))
        action = {"exec": {"command": ["bash", "-c", " && ".join(checks)]}}
    timeout = 5 if node_type == "head" else 2
    ray.setdefault("livenessProbe", {**copy.deepcopy(action), "initialDelaySeconds": 30, "timeoutSeconds": timeout,
                                     "periodSeconds": 5, "successThreshold": 1, "failureThreshold": 120})
    ray.setdefault("readinessProbe", {**copy.deepcopy(action), "initialDelaySeconds": 10, "timeoutSeconds": timeout,
                                      "periodSeconds": 5, "successThreshold": 1, "failureThreshold": 10})


def build_pod(rc, node_type, group):
    """The pod KubeRay would create for a head (``group`` = the headGroupSpec) or a worker group."""
    meta = rc["metadata"]
    template = copy.deepcopy(group.get("template") or {})
    tmeta = template.get("metadata") or {}
    spec = template.get("spec") or {}
    group_name = HEAD_GROUP if node_type == "head" else group["groupName"]
    prefix = meta["name"] if node_type == "head" else f"{meta['name']}-{group_name}"
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": pod_name_prefix(prefix, node_type), "namespace": meta["namespace"],
            "labels": node_labels(rc, node_type, group_name, tmeta.get("labels")),
            "annotations": {**(tmeta.get("annotations") or {}), "ray.io/ft-enabled": "false"},
            "ownerReferences": [owner_reference(rc)],
        },
        "spec": spec,
    }
    ray = spec["containers"][0]
    fqdn = head_fqdn(rc)
    params = start_params(rc, node_type, group.get("rayStartParams"), ray.get("resources") or {})
    if not any(p.get("name") == "metrics" for p in ray.get("ports") or []):
        ray.setdefault("ports", []).append({"name": "metrics", "containerPort": METRICS_PORT})
    if token_enabled(rc):
        _token_env(rc, ray)
    if node_type == "worker":
        spec["initContainers"] = list(spec.get("initContainers") or []) + [_wait_gcs_init(rc, ray)]
    if "plasma-directory" not in params:
        _add_shm(pod, ray)

    command = " ".join(ray.get("command") or []) + " " + " ".join(ray.get("args") or [])
    generated = start_command(node_type, params)
    if "ray start" not in command:
        full = f"ulimit -n ${{RAY_START_ULIMIT_OPEN_FILES:-65536}}; {generated}"
        ray["command"] = ["/bin/bash", "-c", "--"]
        ray["args"] = [f"{command.strip()} && {full}" if command.strip() else full]

    for init in spec.get("initContainers") or []:
        _env_set(init, "FQ_RAY_IP", fqdn)
        _env_set(init, "RAY_IP", fqdn.split(".")[0])
        if token_enabled(rc):
            _token_env(rc, init)
    ip = fqdn if node_type == "worker" else "127.0.0.1"
    if node_type == "worker":
        _env_set(ray, "FQ_RAY_IP", fqdn, override=True)
        _env_set(ray, "RAY_IP", fqdn.split(".")[0], override=True)
    field = lambda path: {"fieldRef": {"fieldPath": path}}  # noqa: E731
    _env_set(ray, "RAY_CLUSTER_NAME", value_from=field(f"metadata.labels['{LABEL_CLUSTER}']"), override=True)
    _env_set(ray, "RAY_CLUSTER_NAMESPACE", value_from=field("metadata.namespace"), override=True)
    _env_set(ray, "RAY_CLOUD_INSTANCE_ID", value_from=field("metadata.name"), override=True)
    _env_set(ray, "RAY_NODE_TYPE_NAME", value_from=field(f"metadata.labels['{LABEL_GROUP}']"), override=True)
    _env_set(ray, "KUBERAY_GEN_RAY_START_CMD", generated, override=True)
    _env_set(ray, "RAY_PORT", head_port(rc))
    _env_set(ray, "RAY_ADDRESS", f"{ip}:{head_port(rc)}")
    _env_set(ray, "RAY_USAGE_STATS_KUBERAY_IN_USE", "1")
    if node_type == "head":
        _env_set(ray, "RAY_USAGE_STATS_EXTRA_TAGS", "kuberay_version=localkube;kuberay_crd=RayCluster",
                 override=True)
    _env_set(ray, "RAY_DASHBOARD_ENABLE_K8S_DISK_USAGE", "1")
    _probes(rc, node_type, ray, params)
    return pod


# -- the head Service and the token Secret ------------------------------------------------------


def build_head_service(rc):
    """KubeRay's head Service: headless (its default), ports from the head container's named ports
    (else the defaults), always ``metrics``; selector and labels pick the head pod."""
    name = rc["metadata"]["name"]
    selector = {LABEL_CLUSTER: name, LABEL_NODE_TYPE: "head", LABEL_IDENTIFIER: f"{name}-head"[:63],
                "app.kubernetes.io/name": "kuberay", "app.kubernetes.io/created-by": "kuberay-operator"}
    head = rc["spec"]["headGroupSpec"]
    ports = {}
    for port in head["template"]["spec"]["containers"][0].get("ports") or []:
        ports[port.get("name") or f"{port['containerPort']}-port"] = port["containerPort"]
    if not ports:
        ports = {"client": CLIENT_PORT, "gcs-server": GCS_PORT, "dashboard": DASHBOARD_PORT,
                 "metrics": METRICS_PORT, "serve": SERVE_PORT}
    ports.setdefault("metrics", METRICS_PORT)
    custom = copy.deepcopy(head.get("headService") or {})
    cmeta, cspec = custom.get("metadata") or {}, custom.get("spec") or {}
    service_type = head.get("serviceType") or cspec.get("type") or "ClusterIP"
    spec = {**cspec, "selector": selector, "type": service_type,
            "ports": list(cspec.get("ports") or []) + [
                {"name": n, "port": p, "appProtocol": "tcp"} for n, p in sorted(ports.items(), key=lambda i: i[1])]}
    if service_type == "ClusterIP" and "clusterIP" not in cspec:
        spec.update(clusterIP="None", publishNotReadyAddresses=True)
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": head_service_name(rc), "namespace": rc["metadata"]["namespace"],
                     "labels": {**(cmeta.get("labels") or {}), **selector},
                     "annotations": dict(cmeta.get("annotations") or {}),
                     "ownerReferences": [owner_reference(rc)]},
        "spec": spec,
    }


def build_token_secret(rc):
    """A random token, as KubeRay's createAuthSecret makes it (32 random bytes, base64)."""
    token = base64.b64encode(secrets.token_bytes(32)).decode()
    return {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": token_secret_name(rc), "namespace": rc["metadata"]["namespace"],
                     "labels": {LABEL_CLUSTER: rc["metadata"]["name"]},
                     "ownerReferences": [owner_reference(rc)]},
        "type": "Opaque",
        "data": {TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    }
