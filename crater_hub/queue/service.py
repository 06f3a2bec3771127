"""The hub-side queue: the database is the truth, one loop makes the cluster follow it.

:class:`QueueService` keeps every unfinished job (and every finished one whose Kubernetes Job
is not yet cleaned up) in memory, mirrored from the database, and runs one loop — woken by the
watch caches (Jobs in the jobs namespace, the shared Pods cache) and by submits and cancels, and
at least every ``tick`` seconds — that does, in order:

1. **reconcile** each of those jobs against the caches (no API LIST, ever): create the Job of an
   admitted record that has none, follow a Job's pod to ``running``, store the log tail and then
   the final state of a finished one, delete the Job of a finished record, queue a preempted job
   again when requeueing is on;
2. **admit** (embedded backend): run :func:`crater_hub.queue.engine.schedule` over the queued
   and active jobs, the inventory's free capacity and the users' quotas; write ``admitted`` or
   ``preempted``, then create Jobs. Each admission is first reserved in the hub's quota ledger
   (:mod:`crater_hub.policy.ledger`, shared with the spawner), on the loop, so a server started
   while the cycle decided is counted; every change of a job's state keeps the ledger true.

With the **kueue** backend (:mod:`crater_hub.queue.kueue`) step 1 also creates the Jobs of queued
records, suspended in the LocalQueue, and moves records as their Workloads say (``admitted``,
``preempted`` when evicted); step 2 is replaced by reading the queue positions from Kueue's
visibility API. Crash safety is the same: the Job is what Kueue admits, and it is created by the
same idempotent dispatch.

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
  the outcome and output of a job that ran are never lost;
- a submit is committed before it is answered: a job the client was told about exists.

Database work runs on :class:`crater_hub.db.session.Database`'s worker thread.
"""

import asyncio
import json
import logging
import os
import time
from collections import defaultdict
from datetime import datetime, timezone

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import selectinload

from ..accelerators import Accelerator
from ..datasets.choices import dispatch_refusal as dataset_refusal
from ..db import migrate
from ..db.models import Job, JobTransition, from_isotime, isotime, utcnow
from ..db.session import Database
from ..kube.caches import WatchCache
from ..kube.client import shared_client
from ..kube.inventory import pod_requests, shared_inventory
from ..policy.ledger import JOB, SERVER, Holding
from ..quantity import parse_quantity
from . import engine, faults, home, kueue, manifest, timeline
from .spec import JobError, bytes_of, millicores

log = logging.getLogger("crater_hub.queue")

ACTIVE = ("admitted", "running")
FINAL = ("succeeded", "failed", "cancelled", "preempted")
STATES = ("queued", *ACTIVE, *FINAL)
LOG_TAIL_BYTES = 64 * 1024
#: how long a Job this process created may be missing from the cache before it counts as gone
CREATE_GRACE = 30.0
#: how long a finished Job's pod may be missing from the pod cache before it is finished without
POD_GRACE = 30.0
#: kueue backend: at most one read of Kueue's visibility API per this many seconds
KUEUE_POSITIONS_EVERY = 2.0
#: kueue backend: after a failed read of the visibility API, the next one waits this long
KUEUE_VISIBILITY_BACKOFF = 30.0


def seconds(dt):
    return dt.replace(tzinfo=timezone.utc).timestamp() if dt is not None else None


def _exit_info(pod):
    """(exit code, reason) of the job container of ``pod`` once it terminated, else (None, None)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") != manifest.CONTAINER:
            continue
        term = (status.get("state") or {}).get("terminated") or \
            (status.get("lastState") or {}).get("terminated")
        if term:
            return term.get("exitCode"), term.get("reason")
    return None, None


def _start_info(pod, k8s_job):
    """(started, node) of a job that ended before the hub saw its pod running: the container's
    ``startedAt``; the Job's ``startTime`` when the pod is gone; (None, None) when its container
    never started."""
    if pod is None:
        return from_isotime((k8s_job.get("status") or {}).get("startTime")), None
    node = (pod.get("spec") or {}).get("nodeName")
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        term = (status.get("state") or {}).get("terminated") or {}
        # a container that never started reads 1970-01-01 (or nothing) here, on real clusters too
        if status.get("name") == manifest.CONTAINER and (term.get("startedAt") or "1970") > "1971":
            return from_isotime(term["startedAt"]), node
    return None, None


def _condition(k8s_job, kind):
    for c in (k8s_job.get("status") or {}).get("conditions") or ():
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def _ended(k8s_job):
    """Whether the Job ran to an end (or is about to: the *Target/*Met conditions come first)."""
    return any(_condition(k8s_job, kind) for kind in
               ("Complete", "Failed", "SuccessCriteriaMet", "FailureTarget"))


def _pod_running(pod):
    return (pod.get("status") or {}).get("phase") == "Running"


class QueueService:
    """The job queue of one hub process (see the module docstring).

    ``crater``: the :class:`crater_hub.config.Crater` settings; ``db_url``: where the records
    live; ``users``: an object with ``info(names) -> {name: (groups, is_admin)}``
    (:class:`crater_hub.queue.starter.HubUsers`), None in tests without a hub.
    """

    def __init__(self, crater, db_url, users=None, namespace=None, tick=1.0):
        self.crater = crater
        self.db = Database(db_url)
        self.users = users
        self.namespace = namespace or crater.jobs_namespace or os.environ.get(
            "POD_NAMESPACE", "default")
        self.backend = crater.job_queue_backend
        self.tick = tick
        self.jobs = {}  # id -> detached Job: unfinished, or finished but not cleaned up
        self.decision = engine.Decision()
        self.cycles = 0
        self._wake = asyncio.Event()
        self._cycle_done = None
        self._locks = defaultdict(asyncio.Lock)
        self._created = {}  # Job name -> monotonic time this process created it
        self._pods = defaultdict(dict)  # Job name -> {pod key: pod}
        self.workload_cache = None  # kueue backend: Workloads in the jobs namespace
        self._workloads = {}  # kueue backend: Job name -> its Workload
        self._positions_next = 0.0  # kueue backend: monotonic time of the next visibility read
        self._positions_task = None
        self._kueue_positions = {}  # kueue backend: Job name -> position, from the last read
        self._visibility_warned = False
        self._task = None
        self._podless = {}  # Job name -> when it was first seen finished with no pod in the cache
        self._to_insert = []  # [(spec, future)] waiting for the next insert transaction
        self._inserting = None  # the task committing them
        self.started = asyncio.get_running_loop().create_future()

    # -- start and stop ------------------------------------------------------------------------

    async def start(self):
        """Migrate, load, wait for the caches, reconcile once, then run the loop."""
        try:
            await self.db.call(migrate.upgrade, self.db.engine)
            faults.point("startup.after_migrate")
            await self.db.run(self._load)
            self.job_cache = WatchCache.shared("jobs", self.namespace, manifest.SELECTOR)
            self.inventory = shared_inventory(self.crater.accelerator_catalog())
            self.pod_cache = self.inventory.pod_cache
            for job in self.jobs.values():
                self._account(job)
            self.job_cache.add_listener(self._on_job)
            self.pod_cache.add_listener(self._on_pod)
            for pod in list(self.pod_cache.objects.values()):
                self._on_pod("ADDED", pod, None)
            caches = [self.job_cache.ready(), self.inventory.ready()]
            if self.backend == "kueue":
                self.workload_cache = WatchCache.shared(kueue.WORKLOADS, self.namespace)
                self.workload_cache.add_listener(self._on_workload)
                for workload in list(self.workload_cache.objects.values()):
                    self._on_workload("ADDED", workload, None)
                caches.append(self.workload_cache.ready())
            await asyncio.gather(*caches)
            await self._reconcile_all()
            faults.point("startup.after_reconcile")
            self._task = asyncio.create_task(self._run(), name="crater-queue")
            self.started.set_result(self)
            strategy = self.crater.job_queueing_strategy
            log.info("crater job queue started: %d unfinished jobs, namespace %s, backend %s, %s",
                     len(self.jobs), self.namespace, self.backend,
                     strategy if self.backend == "embedded" else "the ClusterQueue's strategy")
            if self.backend == "kueue" and strategy != "best_effort_fifo":
                log.warning("Crater.job_queueing_strategy = %s is not used with the kueue backend: "
                            "set the ClusterQueue's queueingStrategy (StrictFIFO) instead", strategy)
        except Exception as e:
            if not self.started.done():
                self.started.set_exception(e)
            raise
        return self

    async def stop(self):
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.job_cache.remove_listener(self._on_job)
        self.pod_cache.remove_listener(self._on_pod)
        if self.workload_cache is not None:
            self.workload_cache.remove_listener(self._on_workload)
        if self._positions_task is not None:
            self._positions_task.cancel()
        self.db.close()

    def _load(self, session):
        rows = session.scalars(select(Job).where(or_(
            Job.state.in_(("queued", *ACTIVE)), and_(Job.state.in_(FINAL), Job.cleaned.is_(False)))))
        for job in rows:
            session.expunge(job)
            self.jobs[job.id] = job

    # -- cache listeners: note what changed, wake the loop --------------------------------------

    def _on_job(self, event_type, obj, old):
        self.wake()

    def _on_pod(self, event_type, pod, old):
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
        self.wake()

    def _on_workload(self, event_type, workload, old):
        name = kueue.owner_job(workload)
        if name is None:
            return
        if event_type == "DELETED":
            if self._workloads.get(name) is not None and \
                    self._workloads[name]["metadata"]["name"] == workload["metadata"]["name"]:
                del self._workloads[name]
        else:
            self._workloads[name] = workload
        self.wake()

    def wake(self):
        self._wake.set()

    def pods_of(self, job):
        """The pods of the job's current attempt, newest first."""
        pods = list(self._pods.get(manifest.job_name(job.id, job.attempt), {}).values())
        pods.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
        return pods

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self):
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.tick)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            done, self._cycle_done = self._cycle_done, None
            try:
                await self._reconcile_all()
                if self.backend == "embedded":
                    await self._admit()
                else:
                    await self._read_kueue_positions()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("crater job queue cycle failed; retrying")
            self.cycles += 1
            if done is not None and not done.done():
                done.set_result(None)

    async def next_cycle(self, timeout=10):
        """Wait until a cycle that started after this call has finished."""
        if self._cycle_done is None:
            self._cycle_done = asyncio.get_running_loop().create_future()
        fut = self._cycle_done
        self.wake()
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            pass

    # -- database writes -----------------------------------------------------------------------

    async def _transition(self, job, state, reason, expect=None, **values):
        """Move ``job`` from ``expect`` (its current state) to ``state``, with its history row.

        A compare-and-set: False (and the record reloaded) when the row was no longer ``expect``.
        """
        expect = expect or job.state

        def write(session):
            now = utcnow()
            vals = dict(values, state=state, reason=reason)
            if state == "admitted":
                vals.setdefault("admitted", now)
            elif state == "running":
                vals.setdefault("started", now)
            elif state in FINAL:
                vals.setdefault("finished", now)
            result = session.execute(
                update(Job).where(Job.id == job.id, Job.state == expect).values(**vals))
            if result.rowcount != 1:
                return None
            session.add(JobTransition(job_id=job.id, state=state, reason=reason, at=now))
            return vals

        vals = await self.db.run(write)
        if vals is None:
            await self._reload(job.id)
            return False
        for key, value in vals.items():
            setattr(job, key, value)
        self._account(job)
        return True

    async def _update(self, job, **values):
        def write(session):
            session.execute(update(Job).where(Job.id == job.id).values(**values))

        await self.db.run(write)
        for key, value in values.items():
            setattr(job, key, value)

    async def _reload(self, job_id):
        def read(session):
            job = session.get(Job, job_id)
            if job is not None:
                session.expunge(job)
            return job

        job = await self.db.run(read)
        if job is None or (job.state in FINAL and job.cleaned):
            gone = self.jobs.pop(job_id, None)
            if job is None and gone is not None:
                self.crater.ledger.release(gone.owner, (JOB, job_id))
        else:
            self.jobs[job_id] = job
        if job is not None:
            self._account(job)
        return job

    # -- the quota ledger ----------------------------------------------------------------------

    def _holding(self, job):
        """What an active job holds, for the hub's quota ledger (shared with the spawner)."""
        accelerator = None
        if job.accelerator and job.gpus:
            accelerator = next((a for a in self.inventory.accelerators() if a.slug == job.accelerator),
                               None) or Accelerator(job.accelerator, job.accelerator, "")
        return Holding(JOB, accelerator, job.gpus if accelerator else 0, not job.best_effort)

    def _account(self, job):
        """Keep the ledger true to ``job``'s state: admitted or running jobs hold, others not.
        Every change of a record's state goes through here (on the event loop)."""
        if job.state in ACTIVE:
            self.crater.ledger.hold(job.owner, (JOB, job.id), self._holding(job))
        else:
            self.crater.ledger.release(job.owner, (JOB, job.id))

    # -- reconcile -----------------------------------------------------------------------------

    async def _reconcile_all(self):
        for count, job in enumerate(list(self.jobs.values()), 1):
            if count % 500 == 0:
                await asyncio.sleep(0)  # 10^5 queued Kueue jobs: let the hub serve meanwhile
            if job.state == "queued" and self.backend == "embedded":
                continue
            async with self._locks[job.id]:
                if self.jobs.get(job.id) is not job:
                    continue
                try:
                    await self._reconcile(job)
                except ApiException as e:
                    log.warning("job %s: Kubernetes API error %s (%s); will retry",
                                job.id, e.status, e.reason)
                except Exception:
                    # one job's surprise (an object shaped as we did not expect) must not stop
                    # every other job's progress: log it, go on, try it again next cycle
                    log.exception("job %s: reconciling it failed; will retry", job.id)

    def _k8s_job(self, job):
        name = manifest.job_name(job.id, job.attempt)
        obj = self.job_cache.get(name, self.namespace)
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

    async def _reconcile(self, job):
        name, k8s = self._k8s_job(job)
        if job.state in FINAL:
            await self._cleanup(job, name, k8s)
            return
        if k8s is None:
            if not job.dispatched:
                await self._dispatch(job)
            elif not self._recently_created(name):
                await self._finish(job, "failed", "LostJob: its Kubernetes Job was deleted "
                                   "outside the hub", None)
            return
        if not job.dispatched:
            await self._update(job, dispatched=True, k8s_job=name)
            faults.point("dispatch.after_commit")
        if self.backend == "kueue" and not await self._follow_workload(job, name, k8s):
            return
        pods = self.pods_of(job)
        complete, failed = _condition(k8s, "Complete"), _condition(k8s, "Failed")
        if _ended(k8s):
            if not pods and self._pod_not_seen_yet(name, k8s):
                return  # finish with its exit code and output once its pod is in the cache
            code, why = _exit_info(pods[0]) if pods else (None, None)
            if job.started is None:  # it ran and ended between two looks: when, and where
                started, node = _start_info(pods[0] if pods else None, k8s)
                if started is not None:
                    await self._update(job, started=started, node=node or job.node)
            if complete or _condition(k8s, "SuccessCriteriaMet"):
                await self._finish(job, "succeeded", "Completed: exit code 0", 0 if code is None else code)
            else:
                cond = failed or _condition(k8s, "FailureTarget")
                reason = cond.get("reason") or "Failed"
                if reason == "DeadlineExceeded":
                    text = f"DeadlineExceeded: ran longer than max_runtime ({job.max_runtime}s)"
                elif why == "OOMKilled":
                    text = "OOMKilled: the container ran out of memory"
                elif code is not None:
                    text = f"exit code {code}"
                else:
                    text = f"{reason}: {cond.get('message') or 'the Job failed'}"
                await self._finish(job, "failed", text, code)
            return
        if job.state == "admitted" and pods and _pod_running(pods[0]):
            faults.point("running.before_commit")
            await self._transition(job, "running", f"pod {pods[0]['metadata']['name']} is running "
                                   f"on {pods[0]['spec'].get('nodeName')}",
                                   node=pods[0]["spec"].get("nodeName"))
            faults.point("running.after_commit")

    async def _follow_workload(self, job, name, k8s):
        """Kueue backend: move the record as the Job's Workload says. True when the usual
        following of the Job and its pod applies; False while the job is still Kueue's to admit
        (its Job suspended) or was just evicted."""
        if _ended(k8s):
            return True  # it ran to an end: the Job's conditions and pod tell how
        found = kueue.verdict(self._workloads.get(name))
        if job.state == "queued":
            if found is None or found.state != "admitted":
                return False
            faults.point("admit.before_commit")
            if await self._transition(job, "admitted", found.reason):
                faults.point("admit.after_commit")
            return True
        evicted = kueue.evicted_since(self._workloads.get(name), job.admitted)
        if evicted is not None:
            # Kueue suspends the Job again (its pods stop); the record ends as preempted and the
            # loop deletes the Job, then requeues a new attempt if job_requeue_preempted is on.
            if await self._transition(job, "preempted", evicted.reason):
                faults.point("preempt.after_commit")
            self.wake()
            return False
        return True

    async def _read_kueue_positions(self):
        """Kueue backend: why each queued job waits, from its Workload, and the positions from
        the last read of Kueue's visibility API — read in a task of its own (one GET per
        LocalQueue, at most every KUEUE_POSITIONS_EVERY seconds, every KUEUE_VISIBILITY_BACKOFF
        after a failure), so that a slow visibility server never holds up the queue's loop."""
        queued = [j for j in self.jobs.values() if j.state == "queued"]
        decision = engine.Decision()
        for job in queued:
            found = kueue.verdict(self._workloads.get(manifest.job_name(job.id, job.attempt)))
            decision.waiting[job.id] = found.reason if found is not None else \
                "waiting for Kueue to see its Job"
        by_name = {manifest.job_name(j.id, j.attempt): j.id for j in queued}
        for name, position in self._kueue_positions.items():
            if name in by_name:
                decision.positions[by_name[name]] = position
        self.decision = decision
        reading = self._positions_task is not None and not self._positions_task.done()
        if queued and not reading and time.monotonic() >= self._positions_next:
            self._positions_task = asyncio.create_task(self._refresh_positions(),
                                                       name="crater-kueue-positions")

    async def _refresh_positions(self):
        summary = await self._pending_workloads()
        if summary is None:
            self._positions_next = time.monotonic() + KUEUE_VISIBILITY_BACKOFF
            return
        self._positions_next = time.monotonic() + KUEUE_POSITIONS_EVERY
        self._kueue_positions = kueue.positions(summary)
        self.wake()  # show them

    async def _pending_workloads(self):
        """Kueue's PendingWorkloadsSummary for our LocalQueue; None when it cannot be read (Kueue's
        visibility server not installed or not answering: positions are then unknown)."""
        path = kueue.pending_workloads_path(self.namespace, self.crater.job_kueue_local_queue)
        api = shared_client("CoreV1Api").api_client
        try:
            response = await api.call_api(
                path, "GET", header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"], _preload_content=False, _request_timeout=5)
            try:
                body = await response.read()
            finally:
                response.release()
        except (OSError, asyncio.TimeoutError, aiohttp.ClientError, ApiException) as e:
            self._visibility_problem(f"{type(e).__name__}: {e}")
            return None
        if response.status != 200:
            self._visibility_problem(f"HTTP {response.status} {body[:200]!r}")
            return None
        self._visibility_warned = False
        try:
            return json.loads(body)
        except ValueError:
            self._visibility_problem("not JSON")
            return None

    def _visibility_problem(self, what):
        if not self._visibility_warned:
            log.warning("Kueue's visibility API (GET %s) failed: %s; queue positions are unknown "
                        "until it answers", kueue.pending_workloads_path(
                            self.namespace, self.crater.job_kueue_local_queue), what)
            self._visibility_warned = True

    async def _dispatch(self, job):
        name = manifest.job_name(job.id, job.attempt)
        if why := await dataset_refusal(self.crater, job, self.users):
            await self._finish(job, "failed", why, None)  # unshared since its submit
            return
        try:
            home_node = await home.prepare(job, self.namespace, self.pod_cache)
        except home.HomeRefused as e:  # every retry would be refused: fail, freeing its quota
            await self._finish(job, "failed", str(e), None)
            return
        if home_node and (why := home.unreachable(job, self.inventory.node_cache.get(home_node))):
            await self._finish(job, "failed", why, None)
            return
        body = manifest.build(job, self.namespace, self.crater.job_ttl_after_finished,
                              suspend=self.backend == "kueue", extra_labels=self._queue_labels(job),
                              home_node=home_node)
        faults.point("dispatch.before_create")
        try:
            await shared_client("BatchV1Api").create_namespaced_job(self.namespace, body)
        except ApiException as e:
            if e.status != 409:
                if e.status in (400, 403, 422):
                    await self._finish(job, "failed", f"the cluster refused its Job: {e.reason}", None)
                    return
                raise
        self._created[name] = time.monotonic()
        faults.point("dispatch.after_create")
        await self._update(job, dispatched=True, k8s_job=name)
        faults.point("dispatch.after_commit")

    def _queue_labels(self, job):
        if self.backend != "kueue":
            return {}
        labels = {kueue.QUEUE_LABEL: self.crater.job_kueue_local_queue}
        if self.crater.job_kueue_priority_classes and job.priority:
            labels[kueue.PRIORITY_CLASS_LABEL] = job.priority
        return labels

    async def _finish(self, job, state, reason, exit_code):
        faults.point("finish.before_logs")
        if job.log_tail is None:
            await self._save_logs(job)
        faults.point("finish.after_logs")
        if await self._transition(job, state, reason, exit_code=exit_code):
            faults.point("finish.after_commit")
        self.wake()

    async def _save_logs(self, job):
        pods = self.pods_of(job)
        text = ""
        if pods:
            text = await self.read_pod_log(pods[0]["metadata"]["name"], tail_bytes=LOG_TAIL_BYTES)
        await self._update(job, log_tail=text or "")

    async def read_pod_log(self, pod_name, tail_lines=None, tail_bytes=None):
        """The job container's log (its last ``tail_lines`` lines, then at most its last
        ``tail_bytes`` characters); '' when the pod has none (yet, or any more)."""
        kwargs = {"container": manifest.CONTAINER}
        if tail_lines is not None:
            kwargs["tail_lines"] = tail_lines
        try:
            text = await shared_client("CoreV1Api").read_namespaced_pod_log(
                pod_name, self.namespace, **kwargs)
        except ApiException as e:
            if e.status in (400, 404):
                return ""
            raise
        if tail_bytes is not None and len(text) > tail_bytes:
            text = text[-tail_bytes:]
        return text

    async def _cleanup(self, job, name, k8s):
        """A finished record: keep its logs, delete its Job, then forget it (or requeue it)."""
        if k8s is not None or self.pods_of(job):
            if job.log_tail is None:
                await self._save_logs(job)
            if k8s is not None:
                try:
                    await shared_client("BatchV1Api").delete_namespaced_job(
                        name, self.namespace, propagation_policy="Background",
                        grace_period_seconds=5)
                except ApiException as e:
                    if e.status != 404:
                        raise
                faults.point("cleanup.after_delete")
            if self.pods_of(job):
                return  # its pods are still stopping: done once they are gone
        elif self._recently_created(name):
            return
        self._podless.pop(name, None)
        if job.state == "preempted" and self.crater.job_requeue_preempted:
            faults.point("requeue.before_commit")
            attempt = job.attempt + 1
            if await self._transition(
                    job, "queued", f"requeued after preemption (attempt {attempt + 1})",
                    attempt=attempt, dispatched=False, cleaned=False, k8s_job=None, node=None,
                    log_tail=None, exit_code=None, admitted=None, started=None, finished=None):
                faults.point("requeue.after_commit")
            return
        await self._update(job, cleaned=True)
        self.jobs.pop(job.id, None)
        self._locks.pop(job.id, None)

    # -- admission -----------------------------------------------------------------------------

    def _owner_info(self, owners):
        """owner -> (quota, Usage of their servers): quotas from the hub's users' groups, what
        their servers hold from the ledger."""
        policy, ledger = self.crater.quota_policy(), self.crater.ledger
        if self.users is None:
            info = {owner: ([], False) for owner in owners}
        else:
            info = self.users.info(owners)
        return {owner: (policy.for_user(groups, is_admin), ledger.usage(owner, kinds=(SERVER,)))
                for owner, (groups, is_admin) in info.items()}

    def _engine_job(self, job, cls=engine.QueuedJob, **extra):
        """The engine's view of a record, kept on the record while ``cls`` and ``extra`` (an
        active job's node and start) stay the same: the spec is fixed at submit, and parsing
        its quantities for 10^5 queued jobs on every cycle would cost more than the cycle."""
        key = (cls, *extra.values())
        cached = getattr(job, "_crater_engine_job", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        built = cls(id=job.id, owner=job.owner, priority=job.priority_value,
                    best_effort=job.best_effort, accelerator=job.accelerator, gpus=job.gpus,
                    cpu_m=millicores(job.cpu), mem_b=bytes_of(job.memory),
                    submitted=seconds(job.submitted), runtime=job.max_runtime, **extra)
        job._crater_engine_job = (key, built)  # a plain attribute: the ORM ignores it
        return built

    def _nodes(self, active, finished):
        """Free capacity per node: the inventory's, less what admitted jobs will take once their
        pods are bound, plus what pods of finished jobs still hold (``terminating``).

        ``active``, ``finished``: the records in those states."""
        capacity = self.inventory.capacity()
        nodes = {}
        parsed = {}  # quantity text -> value: nodes repeat the same few

        def quantity(text):
            value = parsed.get(text)
            if value is None:
                value = parsed[text] = parse_quantity(text)
            return value

        for n in capacity["nodes"]:
            if not (n["ready"] and n["schedulable"]):
                continue
            cpu = quantity(n["cpu"]["allocatable"]) - quantity(n["cpu"]["requested"])
            mem = quantity(n["memory"]["allocatable"]) - quantity(n["memory"]["requested"])
            nodes[n["name"]] = engine.NodeFree(
                n["name"], {slug: a["free"] for slug, a in n["accelerators"].items()},
                int(cpu * 1000), int(mem))
        for job in (*active, *finished):  # queued jobs have no pods
            pods = self.pods_of(job)
            bound = next((p for p in pods if (p.get("spec") or {}).get("nodeName")), None)
            if job.state in ACTIVE and bound is None and job.gpus and job.accelerator:
                node = max((n for n in nodes.values() if job.accelerator in n.accelerators),
                           key=lambda n: n.accelerators[job.accelerator], default=None)
                if node is not None:
                    node.accelerators[job.accelerator] -= job.gpus
            if job.state in FINAL and bound is not None and job.accelerator:
                node = nodes.get(bound["spec"]["nodeName"])
                if node is not None:
                    held = pod_requests(bound).get((job.shape or {}).get("resource"), 0)
                    node.terminating[job.accelerator] = node.terminating.get(job.accelerator, 0) + held
        return list(nodes.values())

    async def _admit(self):
        # With a large queue the pure work (sorting out 10^5 records, the engine's cycle) runs
        # on a worker thread so that the hub's event loop keeps serving; a small one stays here,
        # where it costs less than the hop. What reads the caches, the pods and the hub's users
        # stays on the loop. The thread sees a snapshot: what changes meanwhile (a cancel, a
        # submit) is checked again below, as every decision is before it is written.
        inline_max = 1000
        records = list(self.jobs.values())

        def sort_out():
            queued, active, finished = [], [], []
            for j in records:
                state = j.state
                if state == "queued":
                    queued.append(j)
                elif state in ACTIVE:
                    active.append(j)
                elif state in FINAL:
                    finished.append(j)
            engine_jobs = [self._engine_job(j) for j in queued]
            return engine_jobs, {j.owner for j in engine_jobs}, active, finished

        large = len(records) > inline_max
        queued, owners, active, finished = (
            await asyncio.to_thread(sort_out) if large else sort_out())
        if not queued:
            self.decision = engine.Decision()
            return
        info = self._owner_info(owners | {j.owner for j in active})
        args = (
            queued,
            [self._engine_job(j, engine.ActiveJob, node=j.node,
                              started=seconds(j.started or j.admitted)) for j in active],
            self._nodes(active, finished),
            {owner: quota for owner, (quota, _) in info.items()},
            {owner: usage for owner, (_, usage) in info.items()},
            time.time(), self.crater.job_preemption_after, self.crater.job_queueing_strategy)
        if len(queued) > inline_max:
            decision = await asyncio.to_thread(engine.schedule, *args)
        else:
            decision = engine.schedule(*args)
        self.decision = decision
        for victim_id, for_id in decision.preempt:
            victim = self.jobs.get(victim_id)
            if victim is None or victim.state not in ACTIVE:
                continue
            async with self._locks[victim_id]:
                # a cancel (or its end) may have come while this cycle decided: only an active
                # job is preempted, never one the user was already told is cancelled
                if victim.state in ACTIVE and await self._transition(
                        victim, "preempted", f"preempted by job {for_id}", expect=victim.state):
                    faults.point("preempt.after_commit")
        admitted = []
        quotas = {owner: quota for owner, (quota, _) in info.items()}
        # strict_fifo: once one of an owner's admissions is refused at commit, their later ones
        # wait for the next cycle too, or they would start before it
        strict = self.crater.job_queueing_strategy == "strict_fifo"
        held_back = set()
        for job_id, _node in decision.admit:
            job = self.jobs.get(job_id)
            if job is None or job.state != "queued" or job.owner in held_back:
                continue
            async with self._locks[job_id]:
                if job.state != "queued":
                    continue  # cancelled while this cycle decided
                # Reserve in the ledger before committing, with no await in between: a spawn
                # (or another admission) of the owner since this cycle looked is counted now.
                why = self.crater.ledger.reserve(job.owner, (JOB, job.id), self._holding(job),
                                                 quotas.get(job.owner))
                if why:  # decided on what changed meanwhile: the next cycle decides again
                    if strict:
                        held_back.add(job.owner)
                    continue
                faults.point("admit.before_commit")
                reason = (f"admitted: fits {job.owner}'s quota and the free capacity"
                          if not job.best_effort else "admitted on idle capacity (best-effort)")
                try:
                    committed = await self._transition(job, "admitted", reason, expect="queued")
                finally:
                    self._account(self.jobs.get(job_id, job))
                if committed:
                    faults.point("admit.after_commit")
                    admitted.append(job)
        await asyncio.gather(*(self._dispatch_locked(job) for job in admitted))
        if decision.preempt:
            self.wake()

    async def _dispatch_locked(self, job):
        async with self._locks[job.id]:
            if job.state == "admitted" and not job.dispatched:
                try:
                    await self._dispatch(job)
                except ApiException as e:
                    log.warning("job %s: creating its Job failed (%s); will retry", job.id, e.reason)

    # -- the API's operations ------------------------------------------------------------------

    async def submit(self, spec):
        """Store a new job (``queued``) and return its model after the next admission cycle.

        Submits that arrive while an insert is being committed are inserted together in the
        next transaction (a group commit): one commit, not one per job, so that a burst of
        submits is not held to the rate at which the database can sync. Each is answered only
        after its transaction has committed."""
        faults.point("submit.before_insert")
        future = asyncio.get_running_loop().create_future()
        self._to_insert.append((spec, future))
        if self._inserting is None or self._inserting.done():
            self._inserting = asyncio.create_task(self._insert_pending(), name="crater-submit")
        job = await future
        faults.point("submit.after_insert")
        await self.next_cycle()
        if job.state == "queued" and job.id in self.jobs:
            # nothing but its submit has happened to it: answer from memory
            return self.model(job, [{"state": "queued", "reason": "submitted",
                                     "at": isotime(job.submitted)}])
        return await self.get(job.id)

    async def _insert_pending(self):
        while self._to_insert:
            batch, self._to_insert = self._to_insert, []
            await self._insert_batch(batch)

    async def _insert_batch(self, batch):
        try:
            jobs = await self.db.run(self._insert, [spec for spec, _ in batch])
        except Exception as e:
            if len(batch) > 1:  # one refused row must not fail the others: each on its own
                for item in batch:
                    await self._insert_batch([item])
                return
            if not batch[0][1].done():
                batch[0][1].set_exception(e)
            return
        for (_, future), job in zip(batch, jobs, strict=True):
            # known to the loop even if its submitter has gone (the client disconnected)
            self.jobs[job.id] = job
            if not future.done():
                future.set_result(job)

    def _insert(self, session, specs):
        now = utcnow()
        jobs = [Job(owner=spec.owner, name=spec.name, profile=spec.profile,
                    accelerator=spec.accelerator.slug if spec.accelerator else None,
                    gpus=spec.gpus, cpu=spec.cpu, cpu_limit=spec.cpu_limit, memory=spec.memory,
                    memory_limit=spec.memory_limit, image=spec.image, command=list(spec.command),
                    env=dict(spec.env), priority=spec.priority,
                    priority_value=spec.priority_value, best_effort=spec.best_effort,
                    queue=self.queue_name(), max_runtime=spec.max_runtime, shape=spec.shape(),
                    state="queued", reason="submitted", attempt=0, dispatched=False,
                    cleaned=False, submitted=now)
                for spec in specs]
        session.add_all(jobs)
        session.flush()
        session.add_all([JobTransition(job_id=job.id, state="queued", reason="submitted", at=now)
                         for job in jobs])
        session.flush()
        for job in jobs:
            session.expunge(job)
        return jobs

    def queue_name(self):
        return self.crater.job_kueue_local_queue if self.backend == "kueue" else "default"

    async def cancel(self, job_id, by):
        """Cancel a queued or running job (its pod is stopped by the loop); 409 once finished."""
        job = self.jobs.get(job_id)
        if job is None:
            model = await self.get(job_id)
            if model is None:
                raise JobError(f"no job {job_id}", 404)
            raise JobError(f"job {job_id} already ended ({model['state']}); only queued or running "
                           "jobs can be cancelled", 409)
        async with self._locks[job_id]:
            if job.state in FINAL:
                raise JobError(f"job {job_id} already ended ({job.state}); only queued or running "
                               "jobs can be cancelled", 409)
            faults.point("cancel.before_commit")
            if not await self._transition(job, "cancelled", f"cancelled by {by}"):
                raise JobError(f"job {job_id} changed state meanwhile; try again", 409)
            faults.point("cancel.after_commit")
        self.wake()
        return await self.get(job_id)

    async def get(self, job_id, owner=None):
        """The job's model, or None (also when ``owner`` is given and is not its owner)."""
        def read(session):
            return session.scalars(select(Job).where(Job.id == job_id)
                                   .options(selectinload(Job.transitions))).first()

        job = await self.db.run(read)
        if job is None or (owner is not None and job.owner != owner):
            return None
        return self.model(job)

    async def list(self, owner=None, states=None, limit=1000):
        def read(session):
            query = select(Job).options(selectinload(Job.transitions)).order_by(Job.id.desc())
            if owner is not None:
                query = query.where(Job.owner == owner)
            if states:
                query = query.where(Job.state.in_(states))
            return list(session.scalars(query.limit(limit)))

        return [self.model(job) for job in await self.db.run(read)]

    async def log_tail(self, job_id):
        def read(session):
            job = session.get(Job, job_id)
            return None if job is None else job.log_tail

        return await self.db.run(read)

    def model(self, job, transitions=None):
        """The API's view of a record; ``transitions``: its history as the API shows it, when
        ``job`` is a detached record whose history was not loaded."""
        position = eta = None
        if job.state == "queued":
            position = self.decision.positions.get(job.id)
            when = self.decision.estimated_start.get(job.id)
            if when is not None:
                eta = isotime(datetime.fromtimestamp(when, timezone.utc).replace(tzinfo=None))
        return {
            "id": job.id, "owner": job.owner, "name": job.name, "profile": job.profile,
            "accelerator": job.accelerator, "gpus": job.gpus, "cpu": job.cpu, "memory": job.memory,
            "cpu_limit": job.cpu_limit, "memory_limit": job.memory_limit, "image": job.image,
            "command": list(job.command), "env": dict(job.env), "priority": job.priority,
            "queue": job.queue, "state": job.state, "reason": job.reason,
            "waiting": self.decision.waiting.get(job.id) if job.state == "queued" else None,
            "exit_code": job.exit_code, "position": position, "estimated_start": eta,
            "max_runtime": job.max_runtime, "attempt": job.attempt,
            "submitted": isotime(job.submitted), "admitted": isotime(job.admitted),
            "started": isotime(job.started), "finished": isotime(job.finished),
            "k8s_job": job.k8s_job, "node": job.node,
            "datasets": [m["ref"] for m in (job.shape or {}).get("datasets") or ()],
            "transitions": transitions if transitions is not None else [
                {"state": t.state, "reason": t.reason, "at": isotime(t.at)}
                for t in job.transitions],
        }

    def queues(self, models):
        by_queue = defaultdict(list)
        for model in models:
            by_queue[model["queue"]].append(model)
        return {"queues": [{"name": name, "backend": self.backend, "jobs": jobs}
                           for name, jobs in sorted(by_queue.items())]}

    def events_cache(self):
        return WatchCache.shared("events", self.namespace)

    async def events(self, job_id, model):
        """Transitions and the Kubernetes events of the job's Jobs and pods, oldest first."""
        out = [{"type": "Normal" if t["state"] not in ("failed", "preempted") else "Warning",
                "reason": t["state"], "message": t["reason"], "at": t["at"],
                "object": f"crater-job/{job_id}"} for t in model["transitions"]]
        keyed = [(timeline.transition_key(e), e) for e in out]
        cache = self.events_cache()
        await cache.ready(timeout=10)
        names = {manifest.job_name(job_id, a) for a in range(model["attempt"] + 1)}
        for ev in cache:
            obj = ev.get("involvedObject") or {}
            name = obj.get("name") or ""
            # a Job's pods are named <job>-<5 characters>
            if name in names or (obj.get("kind") == "Pod" and any(
                    name.startswith(n + "-") and len(name) == len(n) + 6 for n in names)):
                at = ev.get("lastTimestamp") or ev.get("eventTime") or \
                    (ev.get("metadata") or {}).get("creationTimestamp")
                keyed.append((timeline.kube_event_key(at, ev), {
                    "type": ev.get("type") or "Normal", "reason": ev.get("reason"),
                    "message": ev.get("message"), "at": at,
                    "object": f"{(obj.get('kind') or '').lower()}/{name}"}))
        return timeline.ordered(keyed)
