"""The production commit engine: a Job on the server's node runs the containerd commit program.

The hub never touches a node: it creates a Job (:mod:`.containerd_job`) in the system namespace,
pinned to the server pod's node, that runs ``python -m crater_hub.images.containerd_commit``
(:mod:`crater_hub.images.containerd_commit`) against that node's containerd socket, for the
container named by ``pod.status.containerStatuses[].containerID``. The push credentials are a
Secret the hub keeps in that namespace only.

Following it: the Job and its pod are read from the shared watch caches of the commit namespace
(no LIST per commit); the program's progress lines come from the pod's log, followed as one
stream, and are relayed to the :class:`~.base.Reporter` (committing → pushing, the push's
progress, log lines). The outcome is the program's last ``result`` or ``error`` line; when the
log was lost, its exit status (``EXIT`` of the program) or the Job's failure says why. The Job
is deleted when followed to the end, the commit's timeout included.
"""

import asyncio
import base64
import collections
import json
from urllib.parse import urlsplit

from kubernetes_asyncio.client.exceptions import ApiException
from traitlets import Bool, Unicode

from ...kube.caches import WatchCache
from ...kube.client import shared_client
from ..containerd_commit import REASON_OF_EXIT
from .base import CommitBackend, CommitFailed, CommitResult, container_id
from .containerd_job import (
    CONTAINER,
    SECRET_KEY,
    SECRET_MOUNT,
    SOCKET_MOUNT,
    WORK_MOUNT,
    commit_job,
    job_name,
)

KIND_SELECTOR = "crater.io/kind=commit"
#: a container waiting for one of these will not start by itself
STUCK = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
         "CreateContainerError", "RunContainerError")


class ContainerdCommitBackend(CommitBackend):
    socket_path = Unicode(
        "/run/containerd/containerd.sock", config=True,
        help="containerd's socket on the nodes (mounted into the commit Job as hostPath, type Socket).")
    containerd_namespace = Unicode("k8s.io", config=True, help="containerd namespace of the kubelet's containers.")
    push_secret_name = Unicode(
        "crater-image-push", config=True,
        help="""The Secret (kubernetes.io/dockerconfigjson) with the push credentials, which the hub
        keeps in the commit namespace from CraterImages.push_username/push_password.""")
    job_registry_url = Unicode(
        "", config=True,
        help="""The registry's URL as the nodes reach it; default: CraterImages.registry_url.""")
    host_network = Bool(
        False, config=True,
        help="""Run the commit Job in the node's network (a registry only the nodes' own network
        reaches, such as one on 127.0.0.1 in tests).""")
    python = Unicode("python3", config=True, help="Python of the commit Job's image (with crater_hub installed).")

    @property
    def namespace(self):
        return self.settings.commit_namespace

    @property
    def registry_url(self):
        return self.job_registry_url or self.settings.registry_url

    def command(self, request, cid):
        """The commit program's argv (credentials only as the mounted Secret's path)."""
        args = [self.python, "-m", "crater_hub.images.containerd_commit",
                "--address", SOCKET_MOUNT, "--namespace", self.containerd_namespace,
                "--container-id", cid, "--registry-url", self.registry_url,
                "--repository", request.repository, "--tag", request.tag,
                "--auth-file", f"{SECRET_MOUNT}/{SECRET_KEY}", "--work-dir", WORK_MOUNT,
                "--created-by", f"crater commit of pod {request.pod['metadata']['name']}"]
        if request.max_bytes is not None:
            args += ["--max-bytes", str(request.max_bytes)]
        for key, value in request.labels.items():
            args += ["--label", f"{key}={value}"]
        return args

    async def ensure_push_secret(self):
        """The push credentials in the commit namespace (made, or brought up to date)."""
        host = urlsplit(self.registry_url).netloc
        raw = f"{self.settings.push_username}:{self.settings.push_password}".encode()
        config = {"auths": {host: {"auth": base64.b64encode(raw).decode()}}}
        body = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": self.push_secret_name, "namespace": self.namespace,
                             "labels": {"app.kubernetes.io/managed-by": "crater-hub"}},
                "data": {SECRET_KEY: base64.b64encode(json.dumps(config).encode()).decode()}}
        core = shared_client("CoreV1Api")
        try:
            await core.create_namespaced_secret(self.namespace, body)
        except ApiException as e:
            if e.status != 409:
                raise
            await core.replace_namespaced_secret(self.push_secret_name, self.namespace, body)

    async def commit(self, request, reporter):
        pod = request.pod
        cid = container_id(pod, request.container)
        node = (pod.get("spec") or {}).get("nodeName")
        if cid is None or not node:
            raise CommitFailed("server_stopped", "the server stopped before it could be committed")
        jobs = WatchCache.shared("jobs", self.namespace, KIND_SELECTOR)
        pods = WatchCache.shared("pods", self.namespace, KIND_SELECTOR)
        await asyncio.gather(jobs.ready(), pods.ready())
        name = job_name(cid, request.repository, request.tag)
        try:
            await self.ensure_push_secret()
            manifest = commit_job(
                name=name, namespace=self.namespace, node=node, image=self.settings.commit_job_image,
                command=self.command(request, cid), socket_path=self.socket_path,
                secret_name=self.push_secret_name, owner=request.labels.get("io.crater.owner", ""),
                deadline_seconds=self.settings.commit_timeout, host_network=self.host_network)
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
