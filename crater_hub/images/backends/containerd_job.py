"""The containerd commit Job's manifest: where the commit program runs, and with what.

A batch/v1 Job in the **system namespace** (never the user's), pinned to the server pod's node
(``nodeName``: the container is on that node's containerd only), privileged with the node's
containerd socket (``hostPath`` of type ``Socket``), the push credentials as a Secret of that
namespace mounted read-only for root (never in the environment or the arguments, which the pod
spec shows). Not retried (``backoffLimit: 0``: the user decides whether to try again), removed
by the hub when it has followed it to the end, and by ``ttlSecondsAfterFinished`` should the hub
restart meanwhile.

A pure function: the backend (:mod:`.containerd`) passes the program's argv and creates it.
"""

import hashlib
import re

SOCKET_MOUNT = "/run/containerd/containerd.sock"
SECRET_MOUNT = "/var/run/crater/push"
SECRET_KEY = ".dockerconfigjson"
WORK_MOUNT = "/var/tmp/crater-commit"  # scratch space for the layer until pushed
CONTAINER = "commit"


def escape_label(value):
    """A username as a label value (≤ 63, ``[A-Za-z0-9._-]``, alphanumeric at both ends), a hash
    suffix when it had to change (as ``crater_hub.queue.manifest.escape_label``: one helper to move
    down into ``kube/`` when the rooms are merged)."""
    if re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?", value or ""):
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:8]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-._")[:50]
    return f"{safe}--{digest}" if safe else f"u--{digest}"


def job_name(container_id, repository, tag):
    """``crater-commit-<hash>``: the same commit (container, target) gets the same name, so a
    409 on create means it is running already: follow it."""
    digest = hashlib.sha256(f"{container_id}\0{repository}\0{tag}".encode()).hexdigest()[:16]
    return f"crater-commit-{digest}"


def commit_job(*, name, namespace, node, image, command, socket_path, secret_name, owner,
               deadline_seconds, host_network=False, ttl_seconds=600):
    """The Job (a dict, as the API takes it)."""
    labels = {"app.kubernetes.io/managed-by": "crater-hub", "crater.io/kind": "commit",
              "crater.io/owner": escape_label(owner)}
    pod_spec = {
        "nodeName": node,
        "restartPolicy": "Never",
        "hostNetwork": bool(host_network),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # pinned by nodeName past the scheduler; tolerate the node's taints (a GPU node's) so a
        # NoExecute taint does not evict the commit of a server that runs there
        "tolerations": [{"operator": "Exists"}],
        "containers": [{
            "name": CONTAINER,
            "image": image,
            "command": list(command),
            "securityContext": {"privileged": True},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
            "volumeMounts": [
                {"name": "containerd", "mountPath": SOCKET_MOUNT},
                {"name": "push", "mountPath": SECRET_MOUNT, "readOnly": True},
                {"name": "work", "mountPath": WORK_MOUNT},
            ],
        }],
        "volumes": [
            {"name": "containerd", "hostPath": {"path": socket_path, "type": "Socket"}},
            {"name": "push", "secret": {"secretName": secret_name, "defaultMode": 0o400,
                                        "items": [{"key": SECRET_KEY, "path": SECRET_KEY}]}},
            {"name": "work", "emptyDir": {}},
        ],
    }
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": ttl_seconds,
                 "activeDeadlineSeconds": int(deadline_seconds),
                 "template": {"metadata": {"labels": labels}, "spec": pod_spec}},
    }
