"""RayCluster manifests from a resolved workload, and the REST model of a RayCluster.

Pure functions: no cluster, no hub. What the manifest carries, and why:

- one worker group of ``workers`` replicas, each worker shaped as a server of the same profile
  would be (CPU and memory guarantee/limit, ``accelerator × gpus`` with its node selector and
  tolerations, the profile's datasets read-only), so a cluster asks the policy nothing new;
- the head holds no GPU and runs ``num-cpus: "0"``: Ray schedules no task on it, work lands on
  the workers;
- ``/dev/shm`` as a memory emptyDir on every node: Ray's object store lives there, and a
  container's default 64 MiB would make Ray fall back to disk;
- ``authOptions.mode: token``: the operator makes a Secret ``<name>`` with the token and every
  Ray endpoint (GCS, dashboard, Jobs API) requires it;
- ``crater.io/*`` annotations with what the hub needs back (owner, profile, accelerator, GPUs,
  lifetime, server): the cache alone answers "whose is it, what does it hold" after a restart;
- with the kueue job-queue backend, the LocalQueue label ``kueue.x-k8s.io/queue-name`` and
  ``suspend: true``: Kueue's RayCluster integration makes a Workload of it (a pod set for the
  head, one per worker group) and unsuspends it once admitted. Kueue's webhook would set
  ``suspend`` itself; setting it here keeps a cluster without the webhook from starting unqueued.
"""

import hashlib
import re
import secrets

from ..accelerators import NO_NVIDIA_ENV, holds_nvidia_gpu
from ..policy import datasets as datasets_mod

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayclusters"
#: the kind as :class:`crater_hub.kube.caches.WatchCache` takes a custom resource
RAYCLUSTERS = f"{GROUP}/{VERSION}/{PLURAL}"
MANAGED_BY = {"app.kubernetes.io/managed-by": "crater-hub"}
KIND_LABEL, OWNER_LABEL = "crater.io/kind", "crater.io/owner"
SELECTOR = "app.kubernetes.io/managed-by=crater-hub,crater.io/kind=raycluster"
ANNOTATION = "crater.io/"  # prefix of what the hub stores on the object
#: KubeRay derives ``<name>-head-svc`` and pod names from the cluster's name: 53 keeps them ≤ 63
MAX_NAME = 53
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
WORKER_GROUP = "workers"
DASHBOARD_PORT = 8265
LIFETIMES = ("server", "idle")
#: Kueue's label naming the LocalQueue a workload goes to (as the job queue's Jobs carry it)
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def escape_label(value):
    """A username as a label value (≤ 63, ``[A-Za-z0-9._-]``); names that need changing get a
    hash suffix. (The same rule as the job queue's labels; kept here as rooms share nothing.)"""
    if re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?", value or ""):
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-._")[:50]
    return f"{safe}--{digest}" if safe else f"u--{digest}"


def cluster_name(owner, name=None):
    """``ray-<owner>-<name or random>``, DNS-1123 and at most :data:`MAX_NAME` characters.

    The owner is part of the name so that two users' clusters never collide in the shared
    namespace; a long or unusual username is cut and given a hash, as labels are."""
    user = re.sub(r"[^a-z0-9]+", "-", owner.lower()).strip("-") or "u"
    if user != owner or len(user) > 20:
        user = f"{user[:12].strip('-')}-{hashlib.sha256(owner.encode()).hexdigest()[:6]}"
    suffix = name or secrets.token_hex(3)
    return f"ray-{user}-{suffix}"


def _quantity(value):
    """A Kubernetes quantity string: profiles give CPUs as numbers (``2``, ``0.5``)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return None if value is None else str(value)


def _resources(cpu_request, cpu_limit, mem_request, mem_limit, extra=None):
    requests, limits = {}, {}
    if cpu_request is not None:
        requests["cpu"] = _quantity(cpu_request)
    if cpu_limit is not None:
        limits["cpu"] = _quantity(cpu_limit)
    if mem_request is not None:
        requests["memory"] = _quantity(mem_request)
    if mem_limit is not None:
        limits["memory"] = _quantity(mem_limit)
    for resource, count in (extra or {}).items():
        requests[resource] = limits[resource] = str(count)
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


SHM = {"name": "dshm", "emptyDir": {"medium": "Memory"}}
SHM_MOUNT = {"name": "dshm", "mountPath": "/dev/shm"}


def hub_image(crater):
    """The Ray image of clusters whose request names none: ``Crater.ray_image``, else Ray's own
    image of ``Crater.ray_version``."""
    return crater.ray_image or f"rayproject/ray:{crater.ray_version}"


def configured(crater, *, image=None, max_workers=None, **fields):
    """:func:`raycluster` with what the hub's config decides (Ray version, image, head size, the
    most workers, Kueue's LocalQueue), for both paths that make clusters: the REST create and a
    Ray profile's spawn."""
    return raycluster(ray_version=crater.ray_version, image=image or hub_image(crater),
                      head_cpu=crater.ray_head_cpu, head_memory=crater.ray_head_memory,
                      max_workers=max_workers or crater.ray_max_workers,
                      queue=crater.ray_local_queue(), **fields)


def raycluster(*, name, namespace, owner, spec, workers, ray_version, image, head_cpu="1",
               head_memory="2Gi", max_workers=8, lifetime="server", server=None, owner_pod=None, queue=None):
    """The RayCluster for ``spec`` (a :class:`~crater_hub.policy.workload.WorkloadSpec`).

    ``owner_pod``: the owner's server pod (``metadata`` with ``name`` and ``uid``) that owns the
    cluster, so that the garbage collector deletes it with the pod (``lifetime: "server"``).
    ``queue``: the Kueue LocalQueue that admits it (created suspended), or None."""
    labels = {**MANAGED_BY, KIND_LABEL: "raycluster", OWNER_LABEL: escape_label(owner)}
    acc = spec.accelerator if spec.gpus else None
    annotations = {ANNOTATION + "owner-name": owner, ANNOTATION + "profile": spec.profile,
                   ANNOTATION + "accelerator": acc.slug if acc else "",
                   ANNOTATION + "gpus": str(spec.gpus if acc else 0),
                   ANNOTATION + "lifetime": lifetime, ANNOTATION + "server": server or "",
                   **datasets_mod.annotation(spec.datasets)}
    metadata = {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations}
    if owner_pod is not None:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": owner_pod["name"],
                                        "uid": owner_pod["uid"], "blockOwnerDeletion": False}]
    ds_volumes, ds_mounts = datasets_mod.pod_volumes(spec.datasets)
    volumes = [SHM, *ds_volumes.values()]
    mounts = [SHM_MOUNT, *ds_mounts.values()]
    head = {
        "name": "ray-head", "image": image, "volumeMounts": [SHM_MOUNT],
        "ports": [{"name": "gcs-server", "containerPort": 6379},
                  {"name": "dashboard", "containerPort": DASHBOARD_PORT},
                  {"name": "client", "containerPort": 10001}],
        "resources": _resources(head_cpu, head_cpu, head_memory, head_memory),
        "env": [{"name": k, "value": v} for k, v in NO_NVIDIA_ENV.items()],
    }
    gpu = {acc.resource: spec.gpus} if acc else None
    worker = {
        "name": "ray-worker", "image": image, "volumeMounts": mounts,
        "resources": _resources(spec.cpu_guarantee, spec.cpu_limit, spec.mem_guarantee,
                                spec.mem_limit, gpu),
    }
    if not holds_nvidia_gpu(acc.env if acc else "", spec.gpus if acc else 0):
        worker["env"] = [{"name": k, "value": v} for k, v in NO_NVIDIA_ENV.items()]
    worker_pod = {"containers": [worker], "volumes": volumes}
    if acc is not None:
        if acc.node_selector:
            worker_pod["nodeSelector"] = dict(acc.node_selector)
        if acc.tolerations:
            worker_pod["tolerations"] = [dict(t) for t in acc.tolerations]
    pod_labels = {**labels}
    if queue:
        metadata["labels"] = {**labels, KUEUE_QUEUE_LABEL: queue}
    rc = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RayCluster", "metadata": metadata,
        "spec": {
            "rayVersion": ray_version,
            "authOptions": {"mode": "token"},
            "headGroupSpec": {
                "rayStartParams": {"num-cpus": "0"},
                "template": {"metadata": {"labels": pod_labels},
                             "spec": {"containers": [head], "volumes": [SHM]}},
            },
            "workerGroupSpecs": [{
                "groupName": WORKER_GROUP, "replicas": workers, "minReplicas": 0,
                "maxReplicas": max_workers, "rayStartParams": {},
                "template": {"metadata": {"labels": pod_labels}, "spec": worker_pod},
            }],
        },
    }
    if queue:
        rc["spec"]["suspend"] = True
    return rc


def conditions(rc):
    return {c.get("type"): c.get("status") for c in (rc.get("status") or {}).get("conditions") or []}


def workers_of(rc):
    groups = (rc.get("spec") or {}).get("workerGroupSpecs") or []
    return sum(int(g.get("replicas") or 0) for g in groups)


def scale_patch(rc, workers):
    """The JSON patch that gives ``rc`` ``workers`` workers: the hub makes one worker group
    (:data:`WORKER_GROUP`), and scaling sets its replicas, with a ``test`` of the group's
    name so that a cluster changed meanwhile is refused (422) rather than scaled wrong. A cluster whose groups are not that one group (edited by hand) cannot be
    scaled through the hub: ``ValueError`` saying so."""
    groups = (rc.get("spec") or {}).get("workerGroupSpecs") or []
    if [g.get("groupName") for g in groups] != [WORKER_GROUP]:
        raise ValueError(f"Ray cluster {rc['metadata']['name']} does not have the one worker group "
                         f"{WORKER_GROUP!r} the hub makes; it cannot be scaled through the hub")
    return [{"op": "test", "path": "/spec/workerGroupSpecs/0/groupName", "value": WORKER_GROUP},
            {"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": workers}]


def queued(rc):
    """In a Kueue LocalQueue and not admitted yet: Kueue keeps it suspended until then."""
    labels = rc["metadata"].get("labels") or {}
    return bool(labels.get(KUEUE_QUEUE_LABEL)) and bool((rc.get("spec") or {}).get("suspend"))


def state(rc):
    """``deleting``, ``queued`` (waiting for Kueue's admission), ``ready`` (head ready and every
    asked worker ready), ``scaling`` (was provisioned, workers not all ready now), else
    ``starting``. From the conditions and the ready counts, never the deprecated ``status.state``."""
    if rc["metadata"].get("deletionTimestamp"):
        return "deleting"
    if queued(rc):
        return "queued"
    cond = conditions(rc)
    status = rc.get("status") or {}
    if cond.get("RayClusterSuspended") == "True":
        return "suspended"
    head_ready = cond.get("HeadPodReady") == "True"
    ready_workers = int(status.get("readyWorkerReplicas") or 0)
    if head_ready and cond.get("RayClusterProvisioned") == "True":
        return "ready" if ready_workers == workers_of(rc) else "scaling"
    return "starting"


def model(rc, token=None):
    """The REST model of a RayCluster (``token`` only when the caller owns it)."""
    meta = rc["metadata"]
    ann = meta.get("annotations") or {}
    status = rc.get("status") or {}
    head = status.get("head") or {}
    out = {
        "name": meta["name"], "owner": ann.get(ANNOTATION + "owner-name"),
        "state": state(rc), "workers": workers_of(rc),
        "ready_workers": int(status.get("readyWorkerReplicas") or 0),
        "profile": ann.get(ANNOTATION + "profile"),
        "accelerator": ann.get(ANNOTATION + "accelerator") or None,
        "gpus": int(ann.get(ANNOTATION + "gpus") or 0),
        "lifetime": ann.get(ANNOTATION + "lifetime"), "server": ann.get(ANNOTATION + "server"),
        "ray_version": (rc.get("spec") or {}).get("rayVersion"),
        "image": _head_image(rc),
        "created": meta.get("creationTimestamp"),
        "conditions": conditions(rc),
        "head_ip": head.get("podIP"),
        "dashboard_path": f"crater/ray/{meta['name']}/dashboard/",
        "queue": (meta.get("labels") or {}).get(KUEUE_QUEUE_LABEL),
    }
    if token is not None:
        out["token"] = token
    return out


def _head_image(rc):
    containers = (((((rc.get("spec") or {}).get("headGroupSpec") or {}).get("template") or {})
                   .get("spec") or {}).get("containers")) or [{}]
    return containers[0].get("image")


def owner_of(rc):
    return ((rc.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION + "owner-name")
