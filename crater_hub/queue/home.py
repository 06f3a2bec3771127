"""A job's home at dispatch: the claim exists, and a ReadWriteOnce home keeps the job on its node.

The job's pod mounts its owner's home as the default server does (the volumes frozen in
``job.shape["pod"]`` by :mod:`crater_hub.spawner.job_pod`). Before its Job is created:

- each claim the spawner would create (KubeSpawner's ``storage_pvc_ensure``) is created from the
  spawner's own PVC manifest when it does not exist yet (409: someone made it meanwhile; fine);
- a ReadWriteOnce (or ReadWriteOncePod) claim attaches to one node at a time: while the owner's
  default server runs, the job gets required node affinity to the server's node, or its pod would
  wait forever on a multi-attach error. ReadWriteMany homes (NFS...) leave the job free.

One GET per claim per dispatch (never a LIST): dispatch is already a write to the API.

A claim the cluster refuses to read or create (400, 403, 422: a forbidden namespace, an invalid
claim) will be refused the same way on every retry: :class:`HomeRefused` says why, and the
queue fails the job with that reason, as it does when the cluster refuses the Job itself.
"""

import logging

from kubernetes_asyncio.client.exceptions import ApiException

from ..kube.client import api_message, shared_client

log = logging.getLogger("crater_hub.queue")

#: access modes under which several nodes may mount a claim at once
MULTI_NODE_MODES = {"ReadWriteMany", "ReadOnlyMany"}


#: API statuses that no retry changes
REFUSED = (400, 403, 422)


class HomeRefused(Exception):
    """The cluster refused to read or create a home claim of the job: retrying cannot help."""


def _refused(error, namespace, name):
    return HomeRefused(
        f"the cluster refused its home volume (claim {namespace}/{name}: {error.status} "
        f"{api_message(error)}): "
        f"the job cannot mount your home; ask your administrator to fix the home storage")


def claim_names(pod):
    return [v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes") or []
            if "persistentVolumeClaim" in v]


async def _read(name, namespace):
    return await shared_client("CoreV1Api").read_namespaced_persistent_volume_claim(name, namespace)


async def _access_modes(namespace, name, template):
    """The claim's access modes, creating it from ``template`` when missing; None: no such
    claim and none to create (the pod's mount will fail visibly, as a spawn's would)."""
    try:
        claim = await _read(name, namespace)
    except ApiException as e:
        if e.status != 404 or template is None:
            if e.status == 404:
                return None
            raise
        try:
            claim = await shared_client("CoreV1Api").create_namespaced_persistent_volume_claim(
                namespace, template)
            log.info("created the home claim %s/%s for a job", namespace, name)
        except ApiException as e2:
            if e2.status != 409:
                raise
            claim = await _read(name, namespace)
    return list(claim.spec.access_modes or []) if claim.spec else []


async def prepare(job, namespace, pod_cache):
    """Make the job's home claims exist; the node it must run on (its owner's server's, for a
    single-node home), else None. :class:`HomeRefused` when the cluster refuses a claim."""
    pod = (job.shape or {}).get("pod") or {}
    names = claim_names(pod)
    if not names:
        return None
    templates = {c["metadata"]["name"]: c for c in pod.get("claims") or []}
    single_node = False
    for name in names:
        try:
            modes = await _access_modes(namespace, name, templates.get(name))
        except ApiException as e:
            if e.status in REFUSED:
                raise _refused(e, namespace, name) from None
            raise
        if modes is not None and not set(modes) & MULTI_NODE_MODES:
            single_node = True
    if not single_node or not pod.get("server_pod"):
        return None
    server = pod_cache.get(pod["server_pod"], namespace)
    if server is None or server["metadata"].get("deletionTimestamp"):
        return None
    return (server.get("spec") or {}).get("nodeName") or None


def unreachable(job, node):
    """Why ``job`` can never run on ``node`` (a Node dict from the cache, or None), where its
    single-node home is attached; None when it can. Checked: the node still exists, its labels
    match the job's node selector, and it offers the job's device resource."""
    shape = job.shape or {}
    pod = shape.get("pod") or {}
    if node is None:
        return None  # not in the cache (yet): let the scheduler decide
    name = node["metadata"]["name"]
    labels = node["metadata"].get("labels") or {}
    selector = pod.get("node_selector") or shape.get("node_selector") or {}
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    resource = shape.get("resource") if job.gpus else None
    if all(labels.get(k) == v for k, v in selector.items()) and \
            (not resource or str(allocatable.get(resource, "0")) not in ("0", "")):
        return None
    return (f"its home is a ReadWriteOnce volume, attached to node {name} where your server runs, "
            f"and that node cannot run this job (it has not the devices or labels the job needs): "
            f"stop your server and submit it again, or ask for a ReadWriteMany home")
