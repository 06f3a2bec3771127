"""The production commit engine: a batch/v1 Job on the server pod's node that commits the
container through containerd and pushes it.

This module builds the Job (:func:`commit_job`) and follows it (:meth:`ContainerdCommitBackend.commit`).
The Job runs ``crater-commit`` (:mod:`crater_hub.images.containerd_commit`): ``ctr snapshots
diff`` of the container's snapshot as the new layer, appended with a new config to the base
image's manifest and pushed (containerd's ``ctr`` has no commit; nerdctl >= 2.0 ``commit`` +
``push`` is the other method, which that program does not do).

Following it: the Job and its pod are read from the shared watch caches of the commit namespace
(no LIST per commit); the program's progress lines come from the pod's log, followed as one
stream, and are relayed to the :class:`~.base.Reporter` (committing -> pushing, the push's
progress, log lines). The outcome is the program's last ``result`` or ``error`` line; when the
log was lost, its exit status (``EXIT`` of the program) or the Job's failure says why. The Job
is deleted when followed to the end, the commit's timeout included.

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

import asyncio
import collections
import hashlib
import json
import re

from kubernetes_asyncio.client.exceptions import ApiException
from traitlets import Bool, Unicode

from ...kube.caches import WatchCache
from ...kube.client import shared_client
from ..containerd_commit import REASON_OF_EXIT
from .base import CommitBackend, CommitFailed, CommitResult, container_id

MANAGED = {"app.kubernetes.io/managed-by": "crater-hub", "crater.io/kind": "commit"}
METHODS = ("ctr", "nerdctl")
KIND_SELECTOR = "crater.io/kind=commit"
CONTAINER = "commit"
#: a container waiting for one of these will not start by itself
STUCK = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
         "CreateContainerError", "RunContainerError")


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
        # the layer waits here until pushed: a volume of the node's disk, not the container's
        # own writable layer (a commit may be tens of GiB)
        {"name": "TMPDIR", "value": "/crater/scratch"},
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
                            {"name": "scratch", "mountPath": "/crater/scratch"},
                        ],
                        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"},
                                      "limits": {"memory": "2Gi"}},
                    }],
                    "volumes": [
                        {"name": "containerd", "hostPath": {"path": socket, "type": "Socket"}},
                        {"name": "push", "secret": {"secretName": push_secret, "defaultMode": 0o400,
                                                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}},
                        {"name": "scratch", "emptyDir": {}},
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

    job_registry_url = Unicode(
        "", config=True,
        help="""The registry's URL as the nodes reach it (CRATER_REGISTRY_URL of the Job); default:
        CraterImages.registry_url.""")
    host_network = Bool(
        False, config=True,
        help="""Run the commit Job in the node's network (a registry only the node's own network
        reaches, such as one on 127.0.0.1 in tests).""")

    @property
    def namespace(self):
        return self.settings.commit_namespace

    def manifest(self, request):
        """The Job of :meth:`job`, with what the program needs besides: the registry's URL (its
        scheme: a plain-http registry), the image labels, and the node's network if asked."""
        cid = container_id(request.pod, request.container)
        # the same commit (container, target) gets the same name: a 409 on create is it, running
        commit_id = hashlib.sha256(f"{cid}\0{request.repository}\0{request.tag}".encode()).hexdigest()[:10]
        manifest = self.job(request, commit_id, request.labels.get("io.crater.owner", "user"))
        pod = manifest["spec"]["template"]["spec"]
        pod["containers"][0]["env"] += [
            {"name": "CRATER_REGISTRY_URL", "value": self.job_registry_url or self.settings.registry_url},
            {"name": "CRATER_LABELS", "value": json.dumps(request.labels, sort_keys=True)},
            {"name": "CRATER_CREATED_BY", "value": f"crater commit of pod {request.pod['metadata']['name']}"},
        ]
        if self.host_network:
            pod["hostNetwork"] = True
        return manifest

    async def commit(self, request, reporter):
        if self.method != "ctr":
            raise CommitFailed("runtime_error", f"the commit method {self.method!r} is not implemented by "
                               "crater-commit (ContainerdCommitBackend.method: 'ctr')")
        pod = request.pod
        cid = container_id(pod, request.container)
        node = (pod.get("spec") or {}).get("nodeName")
        if cid is None or not node:
            raise CommitFailed("server_stopped", "the server stopped before it could be committed")
        commit_namespace = self.namespace  # the system namespace's caches (rbac.yaml: crater-hub-image-commits)
        jobs = WatchCache.shared("jobs", commit_namespace, KIND_SELECTOR)
        pods = WatchCache.shared("pods", commit_namespace, KIND_SELECTOR)
        await asyncio.gather(jobs.ready(), pods.ready())
        manifest = self.manifest(request)
        name = manifest["metadata"]["name"]
        try:
            try:
                await shared_client("BatchV1Api").create_namespaced_job(self.namespace, manifest)
            except ApiException as e:
                if e.status != 409:  # 409: the same commit runs already; follow it
                    raise
            reporter.log(f"commit Job {self.namespace}/{name} on node {node} for container {cid[:12]}")
            return await _Follow(self, jobs, pods, name, reporter).run()
        except ApiException as e:
            raise CommitFailed("runtime_error", f"the cluster refused the commit Job: {e.status} {e.reason}") from None
        finally:
            await self._delete(name)

    async def _delete(self, name):
        try:
            await shared_client("BatchV1Api").delete_namespaced_job(
                name, self.namespace, propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                self.log.warning("could not delete commit Job %s/%s: %s", self.namespace, name, e.reason)


class _Follow:
    """One commit Job followed to its end (see the module docstring)."""

    def __init__(self, backend, jobs, pods, name, reporter):
        self.backend, self.jobs, self.pods, self.name, self.reporter = backend, jobs, pods, name, reporter
        self.result = self.error = None
        self.tail = collections.deque(maxlen=5)  # the last lines that were not progress (a traceback's end)
        self.changed = asyncio.Event()

    def _on_change(self, event_type, obj, old):
        self.changed.set()

    async def run(self):
        self.jobs.add_listener(self._on_change)
        self.pods.add_listener(self._on_change)
        try:
            pod = await self._until(self._started)
            if pod:
                await self._relay(pod["metadata"]["name"])
            pod, status = await self._until(self._ended)
            if self.result is None and self.error is None and pod is not None:
                # the stream broke or never opened: the whole log once more, for the last word
                await self._relay(pod["metadata"]["name"], follow=False, quiet=True)
            return self._outcome(pod, status)
        finally:
            self.jobs.remove_listener(self._on_change)
            self.pods.remove_listener(self._on_change)

    async def _until(self, condition):
        """Wait, on the caches' changes, until ``condition()`` is not None; its value."""
        while True:
            self.changed.clear()
            value = condition()
            if value is not None:
                return value
            await self.changed.wait()

    def _job(self):
        return self.jobs.get(self.name, self.backend.namespace)

    def _pod(self):
        job = self._job()
        uid = job and job["metadata"].get("uid")
        for pod in self.pods:
            if any(ref.get("uid") == uid for ref in pod["metadata"].get("ownerReferences") or ()):
                return pod
        return None

    def _failed(self):
        """The Job's failure condition ``(reason, message)``, or None."""
        for condition in ((self._job() or {}).get("status") or {}).get("conditions") or ():
            if condition.get("type") == "Failed" and condition.get("status") == "True":
                return condition.get("reason") or "", condition.get("message") or ""
        return None

    @staticmethod
    def _state(pod):
        for status in (pod.get("status") or {}).get("containerStatuses") or ():
            if status.get("name") == CONTAINER:
                return status.get("state") or {}
        return {}

    def _started(self):
        """The pod once its container runs or ran; ``False`` (no pod to read) if the Job failed
        first; raises when the container cannot start."""
        pod = self._pod()
        if pod is not None:
            state = self._state(pod)
            if "running" in state or "terminated" in state:
                return pod
            waiting = state.get("waiting") or {}
            if waiting.get("reason") in STUCK:
                raise CommitFailed("runtime_error", f"the commit Job's container cannot start on the node: "
                                   f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": "))
        if self._failed() is not None:
            return pod or False
        return None

    def _ended(self):
        """``(pod, its container's terminated state or None)`` once the Job or its pod has ended."""
        pod = self._pod()
        terminated = self._state(pod).get("terminated") if pod is not None else None
        if terminated is not None or self._failed() is not None:
            return pod, terminated
        return None

    async def _relay(self, pod_name, follow=True, quiet=False):
        if quiet:
            self.tail.clear()  # read again from the start
        try:
            response = await shared_client("CoreV1Api").read_namespaced_pod_log(
                pod_name, self.backend.namespace, container=CONTAINER, follow=follow,
                _preload_content=False, _request_timeout=self.backend.settings.commit_timeout)
        except ApiException:
            return
        try:
            async for raw in response.content:
                await self._line(raw.decode(errors="replace").strip(), quiet)
        except (OSError, asyncio.TimeoutError):
            pass  # the stream broke: the outcome comes from the final read or the exit status
        finally:
            response.release()

    async def _line(self, line, quiet):
        try:
            event = json.loads(line)
        except ValueError:
            event = {}
        if not isinstance(event, dict) or not event:
            if not line:
                return
            event = {"log": line}
            self.tail.append(line)
        if "result" in event:
            self.result = event["result"]
        elif "error" in event:
            self.error = event["error"]
        if quiet:
            return
        if "phase" in event:
            await self.reporter.phase(event["phase"])
        elif "progress" in event:
            self.reporter.progress(float(event["progress"]))
        elif "sizes" in event:
            sizes = event["sizes"]
            self.reporter.log(f"changes: {sizes.get('changes')} bytes, layer: {sizes.get('layer')} bytes compressed")
        elif "log" in event:
            self.reporter.log(str(event["log"]))

    def _outcome(self, pod, terminated):
        if self.result is not None:
            r = self.result
            return CommitResult(r["digest"], int(r["size"]), int(r["layer_size"]), r["base"])
        if self.error is not None:
            reason = self.error.get("reason")
            raise CommitFailed(reason if reason in REASON_OF_EXIT.values() else "runtime_error",
                               self.error.get("message") or "the commit failed")
        failed = self._failed()
        if failed is not None and failed[0] == "DeadlineExceeded":
            raise CommitFailed("timed_out", f"the commit Job ran past its {self.backend.settings.commit_timeout}s")
        if terminated is not None:
            code = terminated.get("exitCode")
            raise CommitFailed(REASON_OF_EXIT.get(code, "runtime_error"),
                               f"the commit Job's container ended with exit code {code} "
                               f"({terminated.get('reason') or 'no reason given'}"
                               f"{': ' + terminated['message'] if terminated.get('message') else ''}) and left no result"
                               + (f"; its last output: {' | '.join(self.tail)}" if self.tail else ""))
        reason, message = failed or ("", "")
        raise CommitFailed("runtime_error", f"the commit Job failed: {reason} {message}".strip())
