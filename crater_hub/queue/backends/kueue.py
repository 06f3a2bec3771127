"""The ``kueue`` backend: Kueue admits, the hub follows.

The reconciler creates the Job of each queued record at once, suspended in the LocalQueue
(``Crater.job_kueue_local_queue``); this backend moves records as their Workloads say
(``admitted``; ``preempted`` when evicted) and reads the queue positions from Kueue's visibility
API in a task of its own. Crash safety is the embedded backend's: the Job is what Kueue admits,
and it is created by the same idempotent dispatch. What the Workloads and the visibility API
mean is in :mod:`crater_hub.queue.kueue` (pure functions).
"""

import asyncio
import json
import logging
import time

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from ...kube.caches import WatchCache
from ...kube.client import shared_client
from .. import engine, kueue, manifest
from ..jobstatus import ended
from .base import QueueBackend

log = logging.getLogger("crater_hub.queue")

#: at most one read of Kueue's visibility API per this many seconds
KUEUE_POSITIONS_EVERY = 2.0
#: after a failed read of the visibility API, the next one waits this long
KUEUE_VISIBILITY_BACKOFF = 30.0


class KueueBackend(QueueBackend):
    """Kueue decides; the hub creates suspended Jobs and follows their Workloads."""

    name = "kueue"
    queued_jobs_have_jobs = True
    suspend_jobs = True

    def __init__(self, service, **kwargs):
        super().__init__(service, **kwargs)
        self.workload_cache = None  # Workloads in the jobs namespace
        self._workloads = {}  # Job name -> its Workload
        self._positions_next = 0.0  # monotonic time of the next visibility read
        self._positions_task = None
        self._positions = {}  # Job name -> position, from the last read
        self._visibility_warned = False

    def describe(self):
        return "the ClusterQueue's strategy"

    async def start(self):
        crater = self.service.crater
        if crater.job_queueing_strategy != engine.BEST_EFFORT_FIFO:
            log.warning("Crater.job_queueing_strategy = %s is not used with the kueue backend: "
                        "set the ClusterQueue's queueingStrategy (StrictFIFO) instead",
                        crater.job_queueing_strategy)
        self.workload_cache = WatchCache.shared(kueue.WORKLOADS, self.service.namespace)
        self.workload_cache.add_listener(self._on_workload)
        for workload in list(self.workload_cache.objects.values()):
            self._on_workload("ADDED", workload, None)
        await self.workload_cache.ready()

    async def stop(self):
        if self.workload_cache is not None:
            self.workload_cache.remove_listener(self._on_workload)
        if self._positions_task is not None:
            self._positions_task.cancel()
            try:
                await self._positions_task
            except (asyncio.CancelledError, Exception):
                pass

    def queue_name(self):
        return self.service.crater.job_kueue_local_queue

    def job_labels(self, job):
        crater = self.service.crater
        labels = {kueue.QUEUE_LABEL: crater.job_kueue_local_queue}
        if crater.job_kueue_priority_classes and job.priority:
            labels[kueue.PRIORITY_CLASS_LABEL] = job.priority
        return labels

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
        self.service.wake()

    async def follow(self, job, name, k8s):
        """Move the record as the Job's Workload says (see :meth:`QueueBackend.follow`)."""
        if ended(k8s):
            return True  # it ran to an end: the Job's conditions and pod tell how
        store = self.service.store
        found = kueue.verdict(self._workloads.get(name))
        if job.state == "queued":
            if found is None or found.state != "admitted":
                return False
            await store.transition(job, "admitted", found.reason)
            return True
        evicted = kueue.evicted_since(self._workloads.get(name), job.admitted)
        if evicted is not None:
            # Kueue suspends the Job again (its pods stop); the record ends as preempted and the
            # loop deletes the Job, then requeues a new attempt if job_requeue_preempted is on.
            await store.transition(job, "preempted", evicted.reason)
            self.service.wake()
            return False
        return True

    async def cycle(self):
        """Why each queued job waits, from its Workload, and the positions from the last read
        of Kueue's visibility API — read in a task of its own (one GET per LocalQueue, at most
        every KUEUE_POSITIONS_EVERY seconds, every KUEUE_VISIBILITY_BACKOFF after a failure), so
        that a slow visibility server never holds up the queue's loop."""
        queued = [j for j in self.service.store.jobs.values() if j.state == "queued"]
        decision = engine.Decision()
        for job in queued:
            found = kueue.verdict(self._workloads.get(manifest.job_name(job.id, job.attempt)))
            decision.waiting[job.id] = found.reason if found is not None else \
                "waiting for Kueue to see its Job"
        by_name = {manifest.job_name(j.id, j.attempt): j.id for j in queued}
        for name, position in self._positions.items():
            if name in by_name:
                decision.positions[by_name[name]] = position
        self.service.decision = decision
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
        self._positions = kueue.positions(summary)
        self.service.wake()  # show them

    def _path(self):
        return kueue.pending_workloads_path(self.service.namespace,
                                            self.service.crater.job_kueue_local_queue)

    async def _pending_workloads(self):
        """Kueue's PendingWorkloadsSummary for our LocalQueue; None when it cannot be read (Kueue's
        visibility server not installed or not answering: positions are then unknown)."""
        api = shared_client("CoreV1Api").api_client
        path = self._path()  # the visibility path the RBAC table names (tests/deploy)
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
                        "until it answers", self._path(), what)
            self._visibility_warned = True
