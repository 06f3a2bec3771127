"""The hub-side queue: the database is the truth, one loop makes the cluster follow it.

:class:`QueueService` puts the queue's parts together and runs its loop; the parts, each a
module of its own (the way dask-gateway-server splits a backend from its controller):

- :mod:`~crater_hub.queue.store` — the records, mirrored in memory, and every write to them
  (compare-and-set state changes with their history);
- :mod:`~crater_hub.queue.reconciler` — one job against the watch caches (dispatch, running,
  logs, final state, cleanup, requeue), crash-safe step by step;
- :mod:`~crater_hub.queue.backends` — the admission engine behind one interface: ``embedded``
  (the hub decides) or ``kueue`` (Kueue decides), or an operator's own;
- :mod:`~crater_hub.queue.logs` — pod logs, read once or followed;
- :mod:`~crater_hub.queue.views` — what the API shows (models, queues, timelines).

The loop, woken by the watch caches (Jobs in the jobs namespace, the shared Pods cache) and by
submits and cancels, and at least every ``tick`` seconds, reconciles every record, then runs one
cycle of the backend. A submit is committed before it is answered: a job the client was told
about exists. Database work runs on :class:`crater_hub.db.session.Database`'s worker thread.
"""

import asyncio
import logging
import os

from ..db import migrate
from ..db.models import isotime
from ..db.session import Database
from ..kube.caches import WatchCache
from ..kube.inventory import shared_inventory
from . import engine, manifest, metrics, views
from .backends import backend_class
from .backends.embedded import INLINE_MAX, seconds
from .logs import PodLogs, StreamLimit
from .reconciler import LOG_TAIL_BYTES, Reconciler
from .spec import JobError
from .store import ACTIVE, FINAL, STATES, JobStore

# re-exported: the handlers and benchmarks import these from here
__all__ = ["ACTIVE", "FINAL", "LOG_TAIL_BYTES", "STATES", "QueueService", "seconds"]

log = logging.getLogger("crater_hub.queue")


class QueueService:
    """The job queue of one hub process (see the module docstring).

    ``crater``: the :class:`crater_hub.config.Crater` settings; ``db_url``: where the records
    live; ``users``: an object with ``info(names) -> {name: (groups, is_admin)}``
    (:class:`crater_hub.hubstart.HubUsers`), None in tests without a hub.
    """

    def __init__(self, crater, db_url, users=None, namespace=None, tick=1.0):
        self.crater = crater
        self.db = Database(db_url)
        self.users = users
        self.namespace = namespace or crater.jobs_namespace or os.environ.get(
            "POD_NAMESPACE", "default")
        self.tick = tick
        self.inventory = None
        self.store = JobStore(self.db, crater.ledger, lambda: self.inventory.accelerators())
        self.reconciler = Reconciler(self)
        self.queue_backend = backend_class(crater)(self, parent=crater)
        self.backend = self.queue_backend.name  # the name, as Crater.job_queue_backend gives it
        self.logs = PodLogs(self.namespace)
        self.streams = StreamLimit(crater.job_log_streams_per_user)
        self.decision = engine.Decision()
        self.cycles = 0
        self.job_cache = self.pod_cache = None
        self._events = None
        self._wake = asyncio.Event()
        self._cycle_done = None
        self._task = None
        self._newest_id = 0  # the newest job id inserted by this process
        self._decided_id = 0  # the newest job id the last finished cycle saw
        self._to_insert = []  # [(spec, future)] waiting for the next insert transaction
        self._inserting = None  # the task committing them
        self.started = asyncio.get_running_loop().create_future()

    @property
    def jobs(self):
        """id -> detached record: every unfinished job, and finished ones not yet cleaned up."""
        return self.store.jobs

    # -- start and stop ------------------------------------------------------------------------

    async def start(self):
        """Migrate, load, wait for the caches, reconcile once, then run the loop."""
        try:
            await self.db.call(migrate.upgrade, self.db.engine)
            await self.db.run(self.store.load)
            self._newest_id = max(self.jobs, default=0)
            self.job_cache = WatchCache.shared("jobs", self.namespace, manifest.SELECTOR)
            self.inventory = shared_inventory(self.crater.accelerator_catalog())
            self.pod_cache = self.inventory.pod_cache
            for job in self.jobs.values():
                self.store.account(job)
            self.job_cache.add_listener(self._on_job)
            self.pod_cache.add_listener(self.reconciler.on_pod)
            for pod in list(self.pod_cache.objects.values()):
                self.reconciler.on_pod("ADDED", pod, None)
            await asyncio.gather(self.job_cache.ready(), self.inventory.ready(),
                                 self.queue_backend.start())
            metrics.watch(self)
            await self.reconciler.reconcile_all()
            self._task = asyncio.create_task(self._run(), name="crater-queue")
            self.started.set_result(self)
            log.info("crater job queue started: %d unfinished jobs, namespace %s, backend %s, %s",
                     len(self.jobs), self.namespace, self.backend, self.queue_backend.describe())
        except Exception as e:
            if not self.started.done():
                self.started.set_exception(e)
            raise
        return self

    async def stop(self):
        """Stop the loop and the backend, let go of the caches, close the database."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._inserting is not None and not self._inserting.done():
            await asyncio.wait([self._inserting], timeout=10)
        if self.job_cache is not None:
            self.job_cache.remove_listener(self._on_job)
        if self.pod_cache is not None:
            self.pod_cache.remove_listener(self.reconciler.on_pod)
        if self._events is not None:
            self._events.close()
        metrics.unwatch(self)
        await self.queue_backend.stop()
        self.db.close()

    # -- the loop ------------------------------------------------------------------------------

    def _on_job(self, event_type, obj, old):
        self.wake()

    def wake(self):
        self._wake.set()

    async def _run(self):
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.tick)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            done, self._cycle_done = self._cycle_done, None
            newest = self._newest_id  # every job up to this one is seen by this cycle
            try:
                await self.reconciler.reconcile_all()
                with metrics.cycle_timer():
                    await self.queue_backend.cycle()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("crater job queue cycle failed; retrying")
            self._decided_id = newest
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

    async def after_cycle(self, timeout=1.0):
        """Wait (at most ``timeout`` seconds) for the end of the next cycle, without asking for
        one: what followers of a job wait on between looks (the caches wake the loop on every
        change of a Job or pod, and it runs at least every ``tick``)."""
        if self._cycle_done is None:
            self._cycle_done = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._cycle_done), timeout)
        except asyncio.TimeoutError:
            pass

    # -- the API's operations ------------------------------------------------------------------

    async def submit(self, spec):
        """Store a new job (``queued``) and return its model.

        Submits that arrive while an insert is being committed are inserted together in the
        next transaction (a group commit): one commit, not one per job, so that a burst of
        submits is not held to the rate at which the database can sync. Each is answered only
        after its transaction has committed.

        Its position is known once an admission cycle has seen it. With a small queue (up to
        INLINE_MAX records) a cycle costs a few milliseconds, and the answer waits for it and
        carries the position (or the admission); with a larger one the answer does not wait
        for a whole cycle: the job is ``queued`` with ``position`` null (not known yet), and
        the next read of the job (``get``) waits for the cycle that places it."""
        future = asyncio.get_running_loop().create_future()
        self._to_insert.append((spec, future))
        if self._inserting is None or self._inserting.done():
            self._inserting = asyncio.create_task(self._insert_pending(), name="crater-submit")
        job = await future
        if len(self.jobs) > INLINE_MAX:
            decision = engine.Decision()  # not placed yet: no position, no estimate
        else:
            await self.next_cycle()
            decision = await self.decided()
        if job.state == "queued" and job.id in self.jobs:
            # nothing but its submit has happened to it: answer from memory
            return self.model(job, [{"state": "queued", "reason": "submitted",
                                     "at": isotime(job.submitted)}], decision)
        return await self.get(job.id)

    async def _insert_pending(self):
        while self._to_insert:
            batch, self._to_insert = self._to_insert, []
            await self._insert_batch(batch)

    async def _insert_batch(self, batch):
        try:
            jobs = await self.store.insert([spec for spec, _ in batch], self.queue_name())
        except Exception as e:
            if len(batch) > 1:  # one refused row must not fail the others: each on its own
                for item in batch:
                    await self._insert_batch([item])
                return
            if not batch[0][1].done():
                batch[0][1].set_exception(e)
            return
        # known to the loop even if its submitter has gone (the client disconnected)
        self._newest_id = max(self._newest_id, *(job.id for job in jobs))
        for (_, future), job in zip(batch, jobs, strict=True):
            if not future.done():
                future.set_result(job)

    def queue_name(self):
        return self.queue_backend.queue_name()

    async def cancel(self, job_id, by):
        """Cancel a queued or running job (its pod is stopped by the loop); 409 once finished."""
        job = self.jobs.get(job_id)
        if job is None:
            model = await self.get(job_id)
            if model is None:
                raise JobError(f"no job {job_id}", 404)
            raise JobError(f"job {job_id} already ended ({model['state']}); only queued or running "
                           "jobs can be cancelled", 409)
        async with self.reconciler.locks[job_id]:
            if job.state in FINAL:
                raise JobError(f"job {job_id} already ended ({job.state}); only queued or running "
                               "jobs can be cancelled", 409)
            if not await self.store.transition(job, "cancelled", f"cancelled by {by}"):
                raise JobError(f"job {job_id} changed state meanwhile; try again", 409)
        self.wake()
        return await self.get(job_id)

    async def get(self, job_id, owner=None):
        """The job's model, or None (also when ``owner`` is given and is not its owner)."""
        job = await self.store.get(job_id)
        if job is None or (owner is not None and job.owner != owner):
            return None
        if job.state == "queued" and job_id > self._decided_id and job_id in self.jobs:
            await self.next_cycle()  # submitted since the last cycle: let one place it
            job = await self.store.get(job_id) or job
        # only a queued job shows a position: others need no positions computed
        decision = await self.decided() if job.state == "queued" else self.decision
        return self.model(job, decision=decision)

    async def list(self, owner=None, states=None, limit=1000, offset=0, transitions=True):
        """Models of jobs, newest first (``owner``'s only, in ``states`` only, when given)."""
        rows = await self.store.list(owner, states, limit, offset, transitions)
        queued = any(job.state == "queued" for job in rows)
        decision = await self.decided() if queued else self.decision
        return [self.model(job, None if transitions else False, decision) for job in rows]

    async def log_tail(self, job_id):
        return await self.store.log_tail(job_id)

    def model(self, job, transitions=None, decision=None):
        """The API's view of a record (``decision``: one :meth:`decided` gave; else the last)."""
        return views.model(job, decision or self.decision, transitions)

    async def decided(self):
        """The last cycle's decision with its positions and estimates computed: they are left
        to the first read (see :class:`~crater_hub.queue.model.Decision`), which for a large
        queue runs on a worker thread, once per decision, whoever asks."""
        decision = self.decision
        if decision.pending:
            if len(self.jobs) > INLINE_MAX:
                await asyncio.to_thread(decision.complete)
            else:
                decision.complete()
        return decision

    def queues(self, models):
        return views.queues(models, self.backend)

    # -- logs and events -----------------------------------------------------------------------

    def pods_of(self, job):
        """The pods of the job's current attempt, newest first."""
        return self.reconciler.pods_of(job)

    async def read_pod_log(self, pod_name, tail_lines=None, tail_bytes=None):
        return await self.logs.read(pod_name, tail_lines, tail_bytes)

    def events_cache(self):
        return WatchCache.shared("events", self.namespace)

    async def events(self, job_id, model):
        """Transitions and the Kubernetes events of the job's Jobs and pods, oldest first."""
        cache = self.events_cache()
        await cache.ready(timeout=10)
        if self._events is None or self._events.cache is not cache:
            self._events = views.EventIndex(cache)
        return views.events(self._events, job_id, model)
