"""The queue's records: the in-memory mirror of every job the loop still has work for, and every
write to them — compare-and-set state changes with their history row, plain updates, inserts.

The database is the truth; :class:`JobStore` keeps a detached :class:`~crater_hub.db.models.Job`
per unfinished record (and per finished one whose Kubernetes Job is not yet cleaned up) so that
the loop reads no table per cycle. Every write goes through :class:`crater_hub.db.session.Database`'s
worker thread, then updates the mirror, then tells the listeners (the quota ledger, the metrics,
the positions kept between cycles), on the event loop.
"""

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import selectinload

from ..accelerators import Accelerator
from ..db.models import Job, JobTransition, utcnow
from ..policy.ledger import JOB, Holding

ACTIVE = ("admitted", "running")
FINAL = ("succeeded", "failed", "cancelled", "preempted")
STATES = ("queued", *ACTIVE, *FINAL)


def _slim(job):
    """Leave a record's pod template (``shape["pod"]``, the bulk of a record: the owner's
    spawner's volumes, mounts and environment) in the database until dispatch needs it: a queue
    of 10^4 jobs would otherwise hold 10^4 copies in the hub's memory. The record is detached,
    so this changes nothing that is written."""
    shape = job.shape
    if shape and "pod" in shape:
        job.__dict__["shape"] = {key: value for key, value in shape.items() if key != "pod"}
        job.__dict__[_POD_LEFT] = True
    return job


_POD_LEFT = "_crater_pod_left_in_db"  # a plain attribute: the ORM ignores it


class JobStore:
    """Records of one queue. ``db``: a :class:`~crater_hub.db.session.Database`; ``ledger``: the
    hub's quota ledger; ``accelerators``: a callable giving the inventory's accelerators (what an
    active job holds is counted per accelerator)."""

    def __init__(self, db, ledger, accelerators):
        self.db = db
        self.ledger = ledger
        self.accelerators = accelerators
        self.jobs = {}  # id -> detached Job: unfinished, or finished but not cleaned up
        self.listeners = []  # callables (job, old_state): after every change the mirror sees

    # -- loading and notifying ------------------------------------------------------------------

    def load(self, session):
        """Fill the mirror (on the database thread, at start)."""
        rows = session.scalars(select(Job).where(or_(
            Job.state.in_(("queued", *ACTIVE)), and_(Job.state.in_(FINAL), Job.cleaned.is_(False)))))
        for job in rows:
            session.expunge(job)
            self.jobs[job.id] = _slim(job) if not job.dispatched else job

    def _changed(self, job, old_state):
        self.account(job)
        for listener in self.listeners:
            listener(job, old_state)

    def forget(self, job_id):
        """Drop a cleaned-up record from the mirror."""
        job = self.jobs.pop(job_id, None)
        if job is not None:
            for listener in self.listeners:
                listener(job, job.state)
        return job

    # -- the quota ledger -----------------------------------------------------------------------

    def holding(self, job):
        """What an active job holds, for the hub's quota ledger (shared with the spawner)."""
        accelerator = None
        if job.accelerator and job.gpus:
            accelerator = next((a for a in self.accelerators() if a.slug == job.accelerator),
                               None) or Accelerator(job.accelerator, job.accelerator, "")
        return Holding(JOB, accelerator, job.gpus if accelerator else 0, not job.best_effort)

    def account(self, job):
        """Keep the ledger true to ``job``'s state: admitted or running jobs hold, others not.
        Every change of a record's state goes through here (on the event loop)."""
        if job.state in ACTIVE:
            self.ledger.hold(job.owner, (JOB, job.id), self.holding(job))
        else:
            self.ledger.release(job.owner, (JOB, job.id))

    # -- writes ---------------------------------------------------------------------------------

    async def transition(self, job, state, reason, expect=None, **values):
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
            await self.reload(job.id)
            return False
        old = job.state
        for key, value in vals.items():
            setattr(job, key, value)
        self._changed(job, old)
        return True

    async def load_shape(self, job):
        """Bring back the pod template :func:`_slim` left in the database (for dispatch)."""
        if not job.__dict__.get(_POD_LEFT):
            return job

        def read(session):
            return session.scalar(select(Job.shape).where(Job.id == job.id))

        shape = await self.db.run(read)
        if shape is not None:
            job.__dict__["shape"] = shape
        job.__dict__.pop(_POD_LEFT, None)
        return job

    async def update(self, job, **values):
        """Write ``values`` to the record (no state change, no history row)."""
        def write(session):
            session.execute(update(Job).where(Job.id == job.id).values(**values))

        await self.db.run(write)
        for key, value in values.items():
            setattr(job, key, value)

    async def reload(self, job_id):
        """Read the record again (another writer changed it); forget it once it is done with."""
        def read(session):
            job = session.get(Job, job_id)
            if job is not None:
                session.expunge(job)
            return job

        job = await self.db.run(read)
        old = self.jobs.get(job_id)
        if job is None or (job.state in FINAL and job.cleaned):
            gone = self.jobs.pop(job_id, None)
            if job is None and gone is not None:
                self.ledger.release(gone.owner, (JOB, job_id))
        else:
            self.jobs[job_id] = job
        if job is not None:
            self._changed(job, old.state if old is not None else None)
        return job

    def insert_rows(self, session, specs, queue):
        """Insert one ``queued`` record per spec, with its first history row (database thread)."""
        now = utcnow()
        jobs = [Job(owner=spec.owner, name=spec.name, profile=spec.profile,
                    accelerator=spec.accelerator.slug if spec.accelerator else None,
                    gpus=spec.gpus, cpu=spec.cpu, cpu_limit=spec.cpu_limit, memory=spec.memory,
                    memory_limit=spec.memory_limit, image=spec.image, command=list(spec.command),
                    env=dict(spec.env), priority=spec.priority,
                    priority_value=spec.priority_value, best_effort=spec.best_effort,
                    queue=queue, max_runtime=spec.max_runtime, shape=spec.shape(),
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

    async def insert(self, specs, queue):
        """Commit new records for ``specs`` (one transaction) and mirror them."""
        jobs = await self.db.run(self.insert_rows, specs, queue)
        for job in jobs:
            self.jobs[job.id] = _slim(job)
            self._changed(job, None)
        return jobs

    # -- reads ----------------------------------------------------------------------------------

    async def get(self, job_id):
        """The record with its history, or None."""
        def read(session):
            return session.scalars(select(Job).where(Job.id == job_id)
                                   .options(selectinload(Job.transitions))).first()

        return await self.db.run(read)

    async def list(self, owner=None, states=None, limit=1000, offset=0, transitions=True):
        """Records newest first, ``offset`` skipped, at most ``limit``."""
        def read(session):
            query = select(Job).order_by(Job.id.desc())
            if transitions:
                query = query.options(selectinload(Job.transitions))
            if owner is not None:
                query = query.where(Job.owner == owner)
            if states:
                query = query.where(Job.state.in_(states))
            return list(session.scalars(query.offset(offset).limit(limit)))

        return await self.db.run(read)

    async def log_tail(self, job_id):
        def read(session):
            job = session.get(Job, job_id)
            return None if job is None else job.log_tail

        return await self.db.run(read)
