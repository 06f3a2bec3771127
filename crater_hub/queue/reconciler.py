"""Reconcile: bring the cluster in line with each record, one job at a time, from the caches.

For each record the loop hands it, :class:`Reconciler` compares what the database says
(desired) with what the watch caches show (observed) and takes the one next step: create the Job
of an admitted record that has none, follow its pod to ``running``, store the log tail and then
the final state of a finished one, delete the Job of a finished record, queue a preempted job
again when requeueing is on. No API LIST, ever: the Jobs and pods come from shared watch caches.

Crash safety — every step writes its intent to the database before acting on the cluster, and
every cluster action is idempotent:

- a record is ``admitted`` (committed) before its Job is created; the Job's name is
  deterministic (``crater-job-<id>``, ``-r<n>`` per requeue) so a retry after a crash gets 409
  and adopts the Job that is there: at most one Job per attempt;
- ``dispatched`` is written once the Job is known to exist; a dispatched record whose Job has
  vanished is failed, never re-created (the Job ran, or was deleted by someone: re-running it
  could run the command twice);
- the log tail is stored before the final state, the final state before the Job is deleted, and
  only the hub deletes a finished Job (``ttlSecondsAfterFinished`` is a week-long backstop), so
  the outcome and output of a job that ran are never lost.
"""

import asyncio
import logging
import time
from collections import defaultdict

from kubernetes_asyncio.client.exceptions import ApiException

from ..datasets.choices import dispatch_refusal as dataset_refusal
from ..kube.client import shared_client
from . import home, manifest
from .jobstatus import condition, ended, exit_info, pod_running, start_info
from .store import FINAL

log = logging.getLogger("crater_hub.queue")

LOG_TAIL_BYTES = 64 * 1024
#: how long a Job this process created may be missing from the cache before it counts as gone
CREATE_GRACE = 30.0
#: how long a finished Job's pod may be missing from the pod cache before it is finished without
POD_GRACE = 30.0


class Reconciler:
    """The per-job steps of the queue's loop. ``service``: the
    :class:`~crater_hub.queue.service.QueueService` it works for (its store, caches, backend)."""

    def __init__(self, service):
        self.service = service
        self.store = service.store
        self.locks = defaultdict(asyncio.Lock)  # job id -> lock: one writer per job at a time
        self._created = {}  # Job name -> monotonic time this process created it
        self._pods = defaultdict(dict)  # Job name -> {pod key: pod}
        self._podless = {}  # Job name -> when it was first seen finished with no pod in the cache

    @property
    def namespace(self):
        return self.service.namespace

    # -- the pods of jobs, from the shared pod cache ----------------------------------------------

    def on_pod(self, event_type, pod, old):
        """Pod cache listener: index the pods of our Jobs by their Job's name."""
        meta = pod["metadata"]
        if meta.get("namespace") != self.namespace or \
                (meta.get("labels") or {}).get(manifest.KIND_LABEL) != "job":
            return
        owner = next((r["name"] for r in meta.get("ownerReferences") or ()
                      if r.get("kind") == "Job"), None)
        if owner is None:
            return
        key = meta["name"]
        if event_type == "DELETED":
            self._pods[owner].pop(key, None)
            if not self._pods[owner]:
                del self._pods[owner]
        else:
            self._pods[owner][key] = pod
        self.service.wake()

    def pods_of(self, job):
        """The pods of the job's current attempt, newest first."""
        pods = list(self._pods.get(manifest.job_name(job.id, job.attempt), {}).values())
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
        return pods

    # -- one pass over every record ---------------------------------------------------------------

    async def reconcile_all(self):
        backend = self.service.queue_backend
        for count, job in enumerate(list(self.store.jobs.values()), 1):
            if count % 500 == 0:
                await asyncio.sleep(0)  # 10^5 queued Kueue jobs: let the hub serve meanwhile
            if job.state == "queued" and not backend.queued_jobs_have_jobs:
                continue
            async with self.locks[job.id]:
                if self.store.jobs.get(job.id) is not job:
                    continue
                try:
                    await self.reconcile(job)
                except ApiException as e:
                    log.warning("job %s: Kubernetes API error %s (%s); will retry",
                                job.id, e.status, e.reason)
                except Exception:
                    # one job's surprise (an object shaped as we did not expect) must not stop
                    # every other job's progress: log it, go on, try it again next cycle
                    log.exception("job %s: reconciling it failed; will retry", job.id)

    def k8s_job(self, job):
        name = manifest.job_name(job.id, job.attempt)
        obj = self.service.job_cache.get(name, self.namespace)
        if obj is not None:
            self._created.pop(name, None)
        return name, obj

    def _pod_not_seen_yet(self, name, k8s):
        """Whether a finished Job that ran a pod should wait for that pod to reach the pod
        cache: Jobs and pods come through two watches, so a Job's Complete condition can arrive
        before its pod's last events. Up to POD_GRACE seconds; then it finishes without."""
        status = k8s.get("status") or {}
        if not (status.get("succeeded") or status.get("failed")):
            return False  # no pod ever ran (e.g. the deadline passed while it was pending)
        first = self._podless.setdefault(name, time.monotonic())
        if time.monotonic() - first < POD_GRACE:
            return True
        log.warning("Job %s finished but its pod never reached the cache; finishing without "
                    "its exit code and logs", name)
        return False

    def _recently_created(self, name):
        created = self._created.get(name)
        return created is not None and time.monotonic() - created < CREATE_GRACE

    async def reconcile(self, job):
        """One record against the caches: its next step, if any (the caller holds its lock)."""
        name, k8s = self.k8s_job(job)
        if job.state in FINAL:
            await self.cleanup(job, name, k8s)
            return
        if k8s is None:
            if not job.dispatched:
                await self.dispatch(job)
            elif not self._recently_created(name):
                await self.finish(job, "failed", "LostJob: its Kubernetes Job was deleted "
                                  "outside the hub", None)
            return
        if not job.dispatched:
            await self.store.update(job, dispatched=True, k8s_job=name)
        if not await self.service.queue_backend.follow(job, name, k8s):
            return
        pods = self.pods_of(job)
        if ended(k8s):
            await self._ended(job, name, k8s, pods)
            return
        if job.state == "admitted" and pods and pod_running(pods[0]):
            await self.store.transition(
                job, "running", f"pod {pods[0]['metadata']['name']} is running on "
                f"{pods[0]['spec'].get('nodeName')}", node=pods[0]["spec"].get("nodeName"))

    async def _ended(self, job, name, k8s, pods):
        if not pods and self._pod_not_seen_yet(name, k8s):
            return  # finish with its exit code and output once its pod is in the cache
        code, why = exit_info(pods[0]) if pods else (None, None)
        if job.started is None:  # it ran and ended between two looks: when, and where
            started, node = start_info(pods[0] if pods else None, k8s)
            if started is not None:
                await self.store.update(job, started=started, node=node or job.node)
        if condition(k8s, "Complete") or condition(k8s, "SuccessCriteriaMet"):
            await self.finish(job, "succeeded", "Completed: exit code 0", 0 if code is None else code)
            return
        cond = condition(k8s, "Failed") or condition(k8s, "FailureTarget")
        reason = cond.get("reason") or "Failed"
        if reason == "DeadlineExceeded":
            text = f"DeadlineExceeded: ran longer than max_runtime ({job.max_runtime}s)"
        elif why == "OOMKilled":
            text = "OOMKilled: the container ran out of memory"
        elif code is not None:
            text = f"exit code {code}"
        else:
            text = f"{reason}: {cond.get('message') or 'the Job failed'}"
        await self.finish(job, "failed", text, code)

    # -- the steps --------------------------------------------------------------------------------

    async def dispatch(self, job):
        """Create the Job of an admitted record (409: it is there already, adopt it)."""
        service = self.service
        name = manifest.job_name(job.id, job.attempt)
        await self.store.load_shape(job)
        if why := await dataset_refusal(service.crater, job, service.users):
            await self.finish(job, "failed", why, None)  # unshared since its submit
            return
        try:
            home_node = await home.prepare(job, self.namespace, service.pod_cache)
        except home.HomeRefused as e:  # every retry would be refused: fail, freeing its quota
            await self.finish(job, "failed", str(e), None)
            return
        if home_node and (why := home.unreachable(job, service.inventory.node_cache.get(home_node))):
            await self.finish(job, "failed", why, None)
            return
        backend = service.queue_backend
        body = manifest.build(job, self.namespace, service.crater.job_ttl_after_finished,
                              suspend=backend.suspend_jobs, extra_labels=backend.job_labels(job),
                              home_node=home_node)
        try:
            await self.create_job(body)
        except ApiException as e:
            if e.status in (400, 403, 422):
                await self.finish(job, "failed", f"the cluster refused its Job: {e.reason}", None)
                return
            raise
        self._created[name] = time.monotonic()
        await self.store.update(job, dispatched=True, k8s_job=name)

    async def create_job(self, body):
        """Create a Kubernetes Job; True if created, False if it was there already (409)."""
        try:
            await shared_client("BatchV1Api").create_namespaced_job(self.namespace, body)
        except ApiException as e:
            if e.status == 409:
                return False
            raise
        return True

    async def delete_job(self, name):
        """Delete a Kubernetes Job and, in the background, its pods (gone already: fine)."""
        try:
            await shared_client("BatchV1Api").delete_namespaced_job(
                name, self.namespace, propagation_policy="Background", grace_period_seconds=5)
        except ApiException as e:
            if e.status != 404:
                raise

    async def dispatch_locked(self, job):
        """:meth:`dispatch` an admitted record under its lock; an API error waits for the loop."""
        async with self.locks[job.id]:
            if job.state == "admitted" and not job.dispatched:
                try:
                    await self.dispatch(job)
                except ApiException as e:
                    log.warning("job %s: creating its Job failed (%s); will retry", job.id, e.reason)

    async def finish(self, job, state, reason, exit_code):
        """Store the log tail, then the final state."""
        if job.log_tail is None:
            await self.save_logs(job)
        await self.store.transition(job, state, reason, exit_code=exit_code)
        self.service.wake()

    async def save_logs(self, job):
        pods = self.pods_of(job)
        text = ""
        if pods:
            text = await self.service.logs.read(pods[0]["metadata"]["name"],
                                                tail_bytes=LOG_TAIL_BYTES)
        await self.store.update(job, log_tail=text or "")

    async def cleanup(self, job, name, k8s):
        """A finished record: keep its logs, delete its Job, then forget it (or requeue it)."""
        if k8s is not None or self.pods_of(job):
            if job.log_tail is None:
                await self.save_logs(job)
            if k8s is not None:
                await self.delete_job(name)
            if self.pods_of(job):
                return  # its pods are still stopping: done once they are gone
        elif self._recently_created(name):
            return
        self._podless.pop(name, None)
        if job.state == "preempted" and self.service.crater.job_requeue_preempted:
            attempt = job.attempt + 1
            await self.store.transition(
                job, "queued", f"requeued after preemption (attempt {attempt + 1})",
                attempt=attempt, dispatched=False, cleaned=False, k8s_job=None, node=None,
                log_tail=None, exit_code=None, admitted=None, started=None, finished=None)
            return
        await self.store.update(job, cleaned=True)
        self.store.forget(job.id)
        self.locks.pop(job.id, None)
