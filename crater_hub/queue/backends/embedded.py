"""The ``embedded`` backend: the hub admits jobs itself.

Each cycle runs :func:`crater_hub.queue.engine.schedule` over the queued and active jobs, the
inventory's free capacity and the users' quotas, then writes ``admitted`` or ``preempted`` and
has the reconciler create the admitted jobs' Kubernetes Jobs. Each admission is first reserved in
the hub's quota ledger (:mod:`crater_hub.policy.ledger`, shared with the spawner), on the loop, so
a server started while the cycle decided is counted.
"""

import asyncio
import time
from datetime import timezone

from ...kube.inventory import pod_requests
from ...policy.ledger import JOB, SERVER
from ...quantity import parse_quantity
from .. import engine
from ..spec import bytes_of, millicores
from ..store import ACTIVE, FINAL
from .base import QueueBackend

#: up to this many records, a cycle runs on the event loop (cheaper than the hop to a thread)
INLINE_MAX = 1000


def seconds(dt):
    """A naive UTC datetime as epoch seconds (None stays None)."""
    return dt.replace(tzinfo=timezone.utc).timestamp() if dt is not None else None


class EmbeddedBackend(QueueBackend):
    """Priorities, fair share, quotas and preemption decided in the hub (see the module)."""

    name = "embedded"

    def __init__(self, service, **kwargs):
        super().__init__(service, **kwargs)
        # the queued jobs ranked as the engine reads them, kept between cycles (ranking 10^5
        # jobs from scratch costs half of a cycle's budget; a cycle's changes are few)
        self.ranking = engine.Ranking()

    def describe(self):
        return self.service.crater.job_queueing_strategy

    def owner_info(self, owners):
        """owner -> (quota, Usage of their servers): quotas from the hub's users' groups, what
        their servers hold from the ledger."""
        crater = self.service.crater
        policy, ledger = crater.quota_policy(), crater.ledger
        users = self.service.users
        info = {owner: ([], False) for owner in owners} if users is None else users.info(owners)
        return {owner: (policy.for_user(groups, is_admin), ledger.usage(owner, kinds=(SERVER,)))
                for owner, (groups, is_admin) in info.items()}

    @staticmethod
    def engine_job(job, cls=engine.QueuedJob, **extra):
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

    def nodes(self, active, finished):
        """Free capacity per node: the inventory's, less what admitted jobs will take once their
        pods are bound, plus what pods of finished jobs still hold (``terminating``).

        ``active``, ``finished``: the records in those states."""
        capacity = self.service.inventory.capacity()
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
        pods_of = self.service.reconciler.pods_of
        for job in (*active, *finished):  # queued jobs have no pods
            pods = pods_of(job)
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

    async def cycle(self):
        # With a large queue the pure work (sorting out 10^5 records, the engine's cycle) runs
        # on a worker thread so that the hub's event loop keeps serving; a small one stays here,
        # where it costs less than the hop. What reads the caches, the pods and the hub's users
        # stays on the loop. The thread sees a snapshot: what changes meanwhile (a cancel, a
        # submit) is checked again below, as every decision is before it is written.
        service = self.service
        records = list(service.store.jobs.values())

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
            engine_jobs = [self.engine_job(j) for j in queued]
            # the ranking is kept between cycles: only the jobs that came or went are moved
            self.ranking.sync(engine_jobs)
            return engine_jobs, {j.owner for j in engine_jobs}, active, finished

        large = len(records) > INLINE_MAX
        queued, owners, active, finished = (
            await asyncio.to_thread(sort_out) if large else sort_out())
        if not queued:
            service.decision = engine.Decision()
            return
        info = self.owner_info(owners | {j.owner for j in active})
        crater = service.crater
        args = (
            self.ranking,
            [self.engine_job(j, engine.ActiveJob, node=j.node,
                             started=seconds(j.started or j.admitted)) for j in active],
            self.nodes(active, finished),
            {owner: quota for owner, (quota, _) in info.items()},
            {owner: usage for owner, (_, usage) in info.items()},
            time.time(), crater.job_preemption_after, crater.job_queueing_strategy)
        if len(queued) > INLINE_MAX:
            decision = await asyncio.to_thread(engine.schedule, *args)
        else:
            decision = engine.schedule(*args)
        service.decision = decision
        await self._preempt(decision)
        admitted = await self._admit(decision, {owner: quota for owner, (quota, _) in info.items()})
        await asyncio.gather(*(service.reconciler.dispatch_locked(job) for job in admitted))
        if decision.preempt:
            service.wake()

    async def _preempt(self, decision):
        store, locks = self.service.store, self.service.reconciler.locks
        for victim_id, for_id in decision.preempt:
            victim = store.jobs.get(victim_id)
            if victim is None or victim.state not in ACTIVE:
                continue
            async with locks[victim_id]:
                # a cancel (or its end) may have come while this cycle decided: only an active
                # job is preempted, never one the user was already told is cancelled
                if victim.state in ACTIVE:
                    await store.transition(victim, "preempted", f"preempted by job {for_id}",
                                           expect=victim.state)

    async def _admit(self, decision, quotas):
        store, locks = self.service.store, self.service.reconciler.locks
        ledger = self.service.crater.ledger
        admitted = []
        # strict_fifo: once one of an owner's admissions is refused at commit, their later ones
        # wait for the next cycle too, or they would start before it
        strict = self.service.crater.job_queueing_strategy == engine.STRICT_FIFO
        held_back = set()
        for job_id, _node in decision.admit:
            job = store.jobs.get(job_id)
            if job is None or job.state != "queued" or job.owner in held_back:
                continue
            async with locks[job_id]:
                if job.state != "queued":
                    continue  # cancelled while this cycle decided
                # Reserve in the ledger before committing, with no await in between: a spawn
                # (or another admission) of the owner since this cycle looked is counted now.
                why = ledger.reserve(job.owner, (JOB, job.id), store.holding(job),
                                     quotas.get(job.owner))
                if why:  # decided on what changed meanwhile: the next cycle decides again
                    if strict:
                        held_back.add(job.owner)
                    continue
                reason = (f"admitted: fits {job.owner}'s quota and the free capacity"
                          if not job.best_effort else "admitted on idle capacity (best-effort)")
                try:
                    committed = await store.transition(job, "admitted", reason, expect="queued")
                finally:
                    store.account(store.jobs.get(job_id, job))
                if committed:
                    admitted.append(job)
        return admitted
