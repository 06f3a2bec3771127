"""The batch/v1 Job of one job attempt, as a plain dict (pure; tested as data).

Shaped like a spawn of the job's profile by its owner's default server: the pod fields, identity
and home that :mod:`crater_hub.spawner.job_pod` froze into ``job.shape["pod"]`` at submit (node
selector, tolerations, affinity of the profile and accelerator, z2jh's uid/fsGroup, the home's
volumes, working directory = home), the accelerator's extended resource with requests = limits,
the profile's CPU and memory. As safe as a notebook pod, and then some — it meets PodSecurity
``restricted``: non-root, no privilege escalation, all capabilities dropped, RuntimeDefault
seccomp; no service-account token; ``NVIDIA_VISIBLE_DEVICES=void`` unless it holds NVIDIA GPUs
(a CUDA image's own ENV says ``all``). Labelled so z2jh's hub NetworkPolicy admits it
(``hub.jupyter.org/network-access-hub``) and crater's job NetworkPolicy selects it.
``backoffLimit: 0`` and ``restartPolicy: Never``: a job's command runs at most once per attempt,
never retried behind the user's back.
"""

import copy
import hashlib
import re

from ..accelerators import NO_NVIDIA_ENV, holds_nvidia_gpu
from ..policy import datasets as datasets_mod

MANAGED_BY = {"app.kubernetes.io/managed-by": "crater-hub"}
KIND_LABEL = "crater.io/kind"
OWNER_LABEL = "crater.io/owner"
JOB_ID_LABEL = "crater.io/job-id"
SELECTOR = "app.kubernetes.io/managed-by=crater-hub,crater.io/kind=job"
CONTAINER = "job"
#: z2jh's hub NetworkPolicy admits pods with this label (the hub API, for the notebook client)
NETWORK_ACCESS_HUB = {"hub.jupyter.org/network-access-hub": "true"}
#: PodSecurity ``restricted``, the container's part
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                      "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def job_name(job_id, attempt=0):
    """``crater-job-<id>`` (``-r<attempt>`` after a requeue): the same record, the same name."""
    return f"crater-job-{job_id}" + (f"-r{attempt}" if attempt else "")


def escape_label(value):
    """A username as a label value (≤ 63, ``[A-Za-z0-9._-]``, alphanumeric at both ends); names
    that need changing get a hash suffix, so two users never share a value."""
    if re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?", value or ""):
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-._")[:50]
    return f"{safe}--{digest}" if safe else f"u--{digest}"


def labels(owner, job_id):
    return {**MANAGED_BY, KIND_LABEL: "job", OWNER_LABEL: escape_label(owner),
            JOB_ID_LABEL: str(job_id)}


def pod_security(pod):
    """The pod's securityContext: non-root with seccomp, as the spawner's uid/gid/fs_gid say."""
    context = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    for key, name in (("runAsUser", "uid"), ("runAsGroup", "gid"), ("fsGroup", "fs_gid")):
        if pod.get(name) is not None:
            context[key] = pod[name]
    if pod.get("supplemental_gids"):
        context["supplementalGroups"] = list(pod["supplemental_gids"])
    return context


def affinity(pod, home_node=None):
    """KubeSpawner's affinity terms from the spawner's traits; ``home_node``: required, in every
    term, when the home is a ReadWriteOnce volume attached to that node (the running server's)."""
    out = {}
    required = copy.deepcopy(list(pod.get("node_affinity_required") or []))
    if home_node:
        on_node = {"key": "metadata.name", "operator": "In", "values": [home_node]}
        required = [{**t, "matchFields": [*t.get("matchFields", []), on_node]}
                    for t in required] or [{"matchFields": [on_node]}]
    node = {}
    if required:
        node["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": required}
    if pod.get("node_affinity_preferred"):
        node["preferredDuringSchedulingIgnoredDuringExecution"] = list(pod["node_affinity_preferred"])
    if node:
        out["nodeAffinity"] = node
    for kind, prefix in (("podAffinity", "pod_affinity"), ("podAntiAffinity", "pod_anti_affinity")):
        terms = {}
        if pod.get(f"{prefix}_required"):
            terms["requiredDuringSchedulingIgnoredDuringExecution"] = list(pod[f"{prefix}_required"])
        if pod.get(f"{prefix}_preferred"):
            terms["preferredDuringSchedulingIgnoredDuringExecution"] = list(pod[f"{prefix}_preferred"])
        if terms:
            out[kind] = terms
    return out


def build(job, namespace, ttl_after_finished, suspend=False, extra_labels=None, home_node=None):
    """The Job for ``job`` (an object with the :class:`crater_hub.db.models.Job` columns).

    ``home_node``: the node the job must run on because its ReadWriteOnce home is attached there
    (:mod:`crater_hub.queue.home`), or None.
    """
    shape = job.shape or {}
    # records from before job pods were shaped by the spawner carry the accelerator's terms only
    pod = shape.get("pod") or {"node_selector": shape.get("node_selector"),
                               "tolerations": shape.get("tolerations")}
    requests, limits = {}, {}
    if job.cpu:
        requests["cpu"] = job.cpu
    if job.cpu_limit:
        limits["cpu"] = job.cpu_limit
    if job.memory:
        requests["memory"] = job.memory
    if job.memory_limit:
        limits["memory"] = job.memory_limit
    if shape.get("resource") and job.gpus:
        requests[shape["resource"]] = limits[shape["resource"]] = str(job.gpus)
    env = [{"name": k, "value": v} for k, v in sorted((job.env or {}).items())]
    if not holds_nvidia_gpu(shape.get("device_env") if shape.get("resource") else "", job.gpus):
        env += [{"name": k, "value": v} for k, v in NO_NVIDIA_ENV.items()]
    env += [{"name": "CRATER_JOB_ID", "value": str(job.id)},
            {"name": "CRATER_JOB_NAME", "value": job.name}]
    meta_labels = {**labels(job.owner, job.id), **(extra_labels or {})}
    pod_labels = {**labels(job.owner, job.id), **NETWORK_ACCESS_HUB}
    container = {
        "name": CONTAINER,
        "image": job.image,
        "command": list(job.command),
        "env": env,
        "resources": {k: v for k, v in (("requests", requests), ("limits", limits)) if v},
        "securityContext": copy.deepcopy(CONTAINER_SECURITY),
    }
    if pod.get("image_pull_policy"):
        container["imagePullPolicy"] = pod["image_pull_policy"]
    # datasets: subPath mounts of their claims, after (never instead of) the home
    mounts = [datasets_mod.Mount.from_model(m) for m in shape.get("datasets") or ()]
    ds_volumes, ds_mounts = datasets_mod.pod_volumes(mounts)
    pod_volumes = [*copy.deepcopy(pod.get("volumes") or []),
                   *(v for v in ds_volumes.values()
                     if v["name"] not in {x["name"] for x in pod.get("volumes") or []})]
    volume_mounts = [*copy.deepcopy(pod.get("volume_mounts") or []), *ds_mounts.values()]
    if volume_mounts:
        container["volumeMounts"] = volume_mounts
    if pod.get("workdir"):
        container["workingDir"] = pod["workdir"]
    pod_spec = {
        "restartPolicy": "Never",
        "containers": [container],
        "nodeSelector": dict(pod.get("node_selector") or {}),
        "tolerations": copy.deepcopy(list(pod.get("tolerations") or [])),
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": pod_security(pod),
    }
    if pod_volumes:
        pod_spec["volumes"] = pod_volumes
    if pod.get("image_pull_secrets"):
        pod_spec["imagePullSecrets"] = copy.deepcopy(pod["image_pull_secrets"])
    if pod.get("scheduler_name"):
        pod_spec["schedulerName"] = pod["scheduler_name"]
    if terms := affinity(pod, home_node):
        pod_spec["affinity"] = terms
    spec = {
        "backoffLimit": 0,
        "activeDeadlineSeconds": int(job.max_runtime),
        "ttlSecondsAfterFinished": int(ttl_after_finished),
        "template": {"metadata": {"labels": pod_labels,
                                  "annotations": {"crater.io/owner-name": job.owner,
                                                  **datasets_mod.annotation(mounts)}},
                     "spec": pod_spec},
    }
    if suspend:
        spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(job.id, job.attempt), "namespace": namespace,
                     "labels": meta_labels,
                     "annotations": {"crater.io/owner-name": job.owner,
                                     "crater.io/job-name": job.name[:200]}},
        "spec": spec,
    }
