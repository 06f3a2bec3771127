"""The production commit engine: a batch/v1 Job on the server pod's node that commits the
container through containerd and pushes it.

This module builds the Job (:func:`commit_job`); running it and following it to the end is the
part a later change adds (:meth:`ContainerdCommitBackend.commit`), against Debian's containerd +
runc, with ``ctr snapshots diff`` of the container's snapshot as the new layer (containerd's
``ctr`` has no commit; nerdctl >= 2.0 ``commit`` + ``push`` is the other method).

What the Job must be, and why:

- in the **system namespace** (``CraterImages.commit_namespace``), never the user's: it is
  privileged and mounts the node's containerd socket;
- **pinned** to the node the server pod runs on (``spec.nodeName``), since the container's
  snapshot lives there;
- the container is named by the ID the kubelet reports in
  ``pod.status.containerStatuses[].containerID`` (``containerd://`` stripped), never found by
  matching names on the node;
- the socket is a ``hostPath`` of ``type: Socket`` (the Job fails if it is not one);
- the push credentials are a Secret in the system namespace only, mounted as a Docker config;
  the user's namespace never holds them.
"""

import hashlib
import re

from traitlets import Unicode

from .base import CommitBackend, container_id

MANAGED = {"app.kubernetes.io/managed-by": "crater-hub", "crater.io/kind": "commit"}
METHODS = ("ctr", "nerdctl")


def commit_job_name(owner, commit_id):
    """``crater-commit-<user slug>-<id>``: deterministic (a 409 means it exists: follow it), DNS-1123."""
    slug = re.sub(r"[^a-z0-9-]+", "-", owner.lower()).strip("-")[:30] or "user"
    digest = hashlib.sha256(owner.encode()).hexdigest()[:6]
    return f"crater-commit-{slug}-{digest}-{commit_id}"[:63].rstrip("-")


def commit_job(*, pod, container, target, commit_id, owner, namespace, image, push_secret,
               socket="/run/containerd/containerd.sock", containerd_namespace="k8s.io", method="ctr",
               max_bytes=None, deadline=1800):
    """The Job that commits ``container`` of ``pod`` and pushes it as ``target`` (a full reference).

    Raises ValueError when the container is not running (no containerID to commit).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    cid = container_id(pod, container)
    if cid is None:
        raise ValueError(f"container {container!r} of pod {pod['metadata']['name']} is not running")
    node = pod["spec"].get("nodeName")
    if not node:
        raise ValueError(f"pod {pod['metadata']['name']} is not bound to a node")
    labels = {**MANAGED, "crater.io/owner": re.sub(r"[^A-Za-z0-9._-]", "-", owner)[:63].strip("-._") or "user",
              "crater.io/commit": str(commit_id)}
    env = [
        {"name": "CRATER_CONTAINER_ID", "value": cid},
        {"name": "CRATER_TARGET", "value": target},
        {"name": "CRATER_METHOD", "value": method},
        {"name": "CONTAINERD_ADDRESS", "value": socket},
        {"name": "CONTAINERD_NAMESPACE", "value": containerd_namespace},
        {"name": "DOCKER_CONFIG", "value": "/crater/push"},
    ]
    if max_bytes is not None:
        env.append({"name": "CRATER_MAX_BYTES", "value": str(max_bytes)})
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": commit_job_name(owner, commit_id), "namespace": namespace, "labels": labels,
                     "annotations": {"crater.io/source-pod": f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"}},
        "spec": {
            "backoffLimit": 0, "activeDeadlineSeconds": deadline, "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeName": node,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    # the server pod's node may be tainted for GPUs: the commit must still land there
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{
                        "name": "commit", "image": image,
                        "command": ["crater-commit"],
                        "env": env,
                        "securityContext": {"privileged": True},
                        "volumeMounts": [
                            {"name": "containerd", "mountPath": socket},
                            {"name": "push", "mountPath": "/crater/push", "readOnly": True},
                        ],
                        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"},
                                      "limits": {"memory": "2Gi"}},
                    }],
                    "volumes": [
                        {"name": "containerd", "hostPath": {"path": socket, "type": "Socket"}},
                        {"name": "push", "secret": {"secretName": push_secret, "defaultMode": 0o400,
                                                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}},
                    ],
                },
            },
        },
    }


class ContainerdCommitBackend(CommitBackend):
    """Commits through containerd on the pod's node (a Job in ``CraterImages.commit_namespace``)."""

    method = Unicode("ctr", config=True, help="'ctr' (snapshots diff, our own manifest) or 'nerdctl' (>= 2.0).")
    socket = Unicode("/run/containerd/containerd.sock", config=True, help="containerd's socket on the nodes.")
    containerd_namespace = Unicode("k8s.io", config=True, help="containerd namespace of the kubelet's containers.")
    push_secret = Unicode(
        "crater-registry-push", config=True,
        help="""Secret (kubernetes.io/dockerconfigjson) with the push credentials, in the commit
        namespace only.""")

    def job(self, request, commit_id, owner):
        s = self.settings
        return commit_job(pod=request.pod, container=request.container, commit_id=commit_id, owner=owner,
                          target=f"{s.host}/{request.repository}:{request.tag}", namespace=s.commit_namespace,
                          image=s.commit_job_image, push_secret=self.push_secret, socket=self.socket,
                          containerd_namespace=self.containerd_namespace, method=self.method,
                          max_bytes=request.max_bytes, deadline=s.commit_timeout)

    async def commit(self, request, reporter):
        raise NotImplementedError(
            "the containerd commit Job is built (commit_job) but not run by this release: "
            "use the localkube backend, or the later containerd change")
