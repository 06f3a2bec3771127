"""Where each dataset is mounted now: read from the shared pod watch cache, never a LIST.

Every pod that mounts datasets carries the ``crater.io/datasets`` annotation (servers through
the spawner, jobs through their manifest); a pod that has ended or is being deleted no longer
counts."""

from ..policy.datasets import refs_of

ENDED = ("Succeeded", "Failed")


def _where(pod):
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if labels.get("crater.io/kind") == "job":
        what = "job " + labels.get("crater.io/job-id", "?")
        user = annotations.get("crater.io/owner-name") or labels.get("crater.io/owner")
    else:
        what = "server " + (annotations.get("hub.jupyter.org/servername") or "(default)")
        user = annotations.get("hub.jupyter.org/username") or labels.get("hub.jupyter.org/username")
    return {"pod": meta.get("name"), "namespace": meta.get("namespace"), "what": what, "user": user}


def mounted(pods):
    """ref -> [where] over ``pods`` (the pod cache's objects)."""
    out = {}
    for pod in pods:
        if (pod.get("status") or {}).get("phase") in ENDED or \
                (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        for ref in refs_of(pod):
            out.setdefault(ref, []).append(_where(pod))
    return out
