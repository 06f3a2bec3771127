"""The batch/v1 Job of one job attempt, as a plain dict (pure; tested as data).

Shaped like a spawn (:mod:`crater_hub.spawner.shaping`): the accelerator's extended resource with
requests = limits, its node selector and tolerations, the profile's CPU and memory; labelled per
DESIGN §5. ``backoffLimit: 0`` and ``restartPolicy: Never``: a job's command runs at most once per
attempt, never retried behind the user's back.
"""

import hashlib
import re

MANAGED_BY = {"app.kubernetes.io/managed-by": "crater-hub"}
KIND_LABEL = "crater.io/kind"
OWNER_LABEL = "crater.io/owner"
JOB_ID_LABEL = "crater.io/job-id"
SELECTOR = "app.kubernetes.io/managed-by=crater-hub,crater.io/kind=job"
CONTAINER = "job"


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


def build(job, namespace, ttl_after_finished, suspend=False, extra_labels=None):
    """The Job for ``job`` (an object with the :class:`crater_hub.db.models.Job` columns)."""
    shape = job.shape or {}
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
    env += [{"name": "CRATER_JOB_ID", "value": str(job.id)},
            {"name": "CRATER_JOB_NAME", "value": job.name}]
    meta_labels = {**labels(job.owner, job.id), **(extra_labels or {})}
    pod_labels = labels(job.owner, job.id)
    container = {
        "name": CONTAINER,
        "image": job.image,
        "command": list(job.command),
        "env": env,
        "resources": {k: v for k, v in (("requests", requests), ("limits", limits)) if v},
    }
    pod_spec = {
        "restartPolicy": "Never",
        "containers": [container],
        "nodeSelector": dict(shape.get("node_selector") or {}),
        "tolerations": list(shape.get("tolerations") or []),
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
    }
    spec = {
        "backoffLimit": 0,
        "activeDeadlineSeconds": int(job.max_runtime),
        "ttlSecondsAfterFinished": int(ttl_after_finished),
        "template": {"metadata": {"labels": pod_labels,
                                  "annotations": {"crater.io/owner-name": job.owner}},
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
