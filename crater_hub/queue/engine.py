"""The embedded admission engine: pure functions over plain data, no I/O, no clock of its own.

One call, :func:`schedule`, takes the queued jobs, the admitted or running ones, the users'
quotas and server usage and the free capacity per node, and returns what to admit (and on which
node it was counted), what to preempt, and each remaining job's queue position and estimated
start. The service calls it on every change; tests call it with literals.

Order: priority class value (higher first; guaranteed before best-effort at equal value), then
fair share (the owner using fewer GPUs now — servers and jobs — first, re-evaluated after every
admission), then FIFO (submit time, then id). Within one owner and priority class the strategy
decides what a waiting job does to the owner's later jobs (``Crater.job_queueing_strategy``, as
Kueue's ``queueingStrategy``): ``best_effort_fifo`` lets a later job that fits start before an
earlier one that waits, for quota or for capacity; ``strict_fifo`` starts an owner's jobs in
submission order, so the first that waits holds back the owner's later ones at its level. Other
owners' jobs are never held back by it (fair share is unchanged).

Quota: a guaranteed job is admitted only if the owner's servers and guaranteed jobs, plus it,
stay within the quota (:func:`crater_hub.policy.quotas.violation`; the ``servers`` limit is for
servers only). Best-effort jobs ignore quota and take idle capacity; they are preempted when a
guaranteed job has waited longer than ``preempt_after`` and evicting best-effort jobs on one node
would let it start there.
"""

import heapq
from dataclasses import dataclass, replace
from operator import attrgetter

from ..policy.quotas import Usage, violation
from . import collector, estimates
from .model import (
    BEST_EFFORT_FIFO,
    CPU_POOL,
    STRATEGIES,
    STRICT_FIFO,
    ActiveJob,
    Decision,
    NodeFree,
    QueuedJob,
)
from .placement import Nodes, Preemptions
from .ranking import Ranking
from .ranking import ordered as ranked_order

# re-exported: the engine's data lives in .model
__all__ = ["BEST_EFFORT_FIFO", "CPU_POOL", "STRATEGIES", "STRICT_FIFO", "ActiveJob", "Decision",
           "NodeFree", "QueuedJob", "Ranking", "schedule"]

_UNLIMITED = float("inf")
_WAITING = "waiting for capacity"
_ID = attrgetter("id")


class _Spec:  # the shape quotas.violation reads
    __slots__ = ("accelerator", "gpus")

    def __init__(self, job):
        self.accelerator = _Slug(job.accelerator, job.accelerator) if job.accelerator else None
        self.gpus = job.gpus


@dataclass(frozen=True)
class _Slug:
    slug: str
    display_name: str




class _Owner:
    """An owner's standing during a cycle: GPUs in use (fair share), quota use and limits."""

    __slots__ = ("name", "fair", "gpus", "acc", "quota", "limit", "caps", "whys", "snap")

    def __init__(self, name, quota):
        self.name = name
        self.fair = 0
        self.gpus = 0  # quota use: servers and guaranteed jobs
        self.acc = {}
        self.quota = quota
        self.limit = _UNLIMITED if quota is None or quota.gpus is None else quota.gpus
        self.caps = {} if quota is None else quota.accelerators
        self.whys = {}  # (gpus in use, of the accelerator, accelerator, gpus asked) -> refusal
        self.snap = None  # (gpus, acc) as of the last admission, shared by the jobs settled then

    def snapshot(self):
        """The quota use the refusals settled now are worded from (taken once per admission)."""
        if self.snap is None:
            self.snap = (self.gpus, dict(self.acc))
        return self.snap

    def refuses(self, acc, gpus):
        """Whether the quota refuses ``gpus`` more of ``acc`` (the checks of quotas.violation)."""
        if self.gpus + gpus > self.limit:
            return True
        cap = self.caps.get(acc)
        return cap is not None and self.acc.get(acc, 0) + gpus > cap

    def why(self, snap, job):
        """``over quota: <the refusal in quotas.violation's words>`` with the use ``snap``, or
        None when ``snap`` leaves room for ``job``; kept, since under best_effort_fifo many of an
        owner's jobs are refused for the same reason in one cycle."""
        gpus, used = snap
        acc = job.accelerator
        key = (gpus, used.get(acc, 0), acc, job.gpus)
        text = self.whys.get(key, 0)
        if text == 0:
            quota = self.quota
            if quota.servers is not None:
                quota = replace(quota, servers=None)
            refusal = violation(quota, Usage(0, gpus, used), _Spec(job))
            text = self.whys[key] = refusal and f"over quota: {refusal}"
        return text




def schedule(queued, active, nodes, quotas, server_usage, now, preempt_after=None,
             strategy=BEST_EFFORT_FIFO):
    """One admission cycle.

    ``queued``: [QueuedJob], or a :class:`Ranking` of them kept between cycles (read, never
    changed); ``active``: [ActiveJob] (admitted or running);
    ``nodes``: [NodeFree] (copied, not modified); ``quotas``: owner -> Quota or None (absent:
    unlimited); ``server_usage``: owner -> Usage of their running servers; ``now``: seconds;
    ``preempt_after``: seconds a guaranteed job waits before preempting (None: never);
    ``strategy``: ``best_effort_fifo`` or ``strict_fifo`` (the module docstring says how).

    Decides as the straightforward algorithm of the module docstring (kept in
    ``tests/unit/queue_engine_reference.py``; tests compare the two), in about linear time: a job
    whose outcome cannot depend on when it is looked at — refused by its owner's quota, or too
    big for every node this cycle with nothing to preempt — is settled as soon as its owner's
    previous job is, without a turn in the fair-share heap. Only admissions and preemptions are
    needed at once; why each other job waits (worded from the quota use it was settled at),
    positions and estimates are computed on the decision's first read.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    with collector.paused():  # see .collector: the collector's passes cost a third of a cycle
        return _schedule(queued, active, nodes, quotas, server_usage, now, preempt_after,
                         strategy == STRICT_FIFO)


def _schedule(queued, active, nodes, quotas, server_usage, now, preempt_after, strict):
    """:func:`schedule`'s cycle, with the collector paused."""
    ranking = queued if isinstance(queued, Ranking) else Ranking(queued)
    decision = Decision()
    waiting = {}  # the turns' reasons that are not refusals: filled in at once
    place = Nodes(nodes)
    owners = {}

    def owner_of(name):
        state = owners.get(name)
        if state is None:
            state = owners[name] = _Owner(name, quotas.get(name))
        return state

    # quota usage counts servers and guaranteed jobs; fair share counts every GPU in use
    for name, usage in server_usage.items():
        state = owner_of(name)
        state.gpus = state.fair = usage.gpus
        state.acc = dict(usage.accelerators)
    for job in active:  # 10^4 of them: the dictionary first, the call only for a new owner
        state = owners.get(job.owner) or owner_of(job.owner)
        state.fair += job.gpus
        if not job.best_effort and job.accelerator and job.gpus:
            state.gpus += job.gpus
            state.acc[job.accelerator] = state.acc.get(job.accelerator, 0) + job.gpus

    no_fit = set()  # needs (job.need: pool, gpus, cpu, mem) that found no node this cycle (free only shrinks)
    no_victims = set()  # (pool, gpus) for which no node could be freed this cycle
    preemptions = Preemptions(place, active)
    cursor, reserved, names = place.cursor, place.reserved, place.names
    free_acc, free_cpu, free_mem = place.acc, place.cpu, place.mem
    preempted = decision.preempt
    last = len(names)
    # the admitted jobs and their node indexes, side by side: they hold capacity and quota from
    # now on (two flat lists: a pair per admission would be 10^4 more objects for the collector)
    admitted, admitted_at = [], []
    settled = []  # per level: [(owner state, [jobs])]
    # settled without a reason yet: jobs, start, stop, owner state, quota use then or None
    # (or jobs, start, stop, None, "behind ..."), five entries per span in one flat list (10^4
    # tuples fewer for the collector); worded on first read
    spans = []
    heappop, heappushpop = heapq.heappop, heapq.heappushpop
    levels, known_order = ranking.levels, ranking.known_order
    for level_key in sorted(levels):
        guaranteed = not level_key[1]
        may_preempt = guaranteed and preempt_after is not None
        lists = []
        heap = []
        for name, jobs in levels[level_key].items():
            state = owners.get(name) or owner_of(name)
            first = jobs[0]
            heap.append((state.fair, first.submitted, first.id, len(lists), 0))
            lists.append((state, jobs))
        settled.append(lists)
        heapq.heapify(heap)
        flags_of = [None] * len(lists)  # slot -> the ranking's quota_flags, when first needed
        turn = None  # the next turn when known without a pop (the same owner, still first)
        while turn is not None or heap:
            _, _, _, slot, index = turn or heappop(heap)
            turn = None
            state, jobs = lists[slot]
            count = len(jobs)
            checked = guaranteed and state.quota is not None
            # this job's turn: it may take capacity or plan a preemption
            job = jobs[index]
            index += 1
            if checked and job.accelerator and job.gpus and state.refuses(job.accelerator, job.gpus):
                spans.extend((jobs, index - 1, index, state, state.snapshot()))
                if strict:
                    if index < count:
                        spans.extend((jobs, index, count, None,
                                      f"behind job {job.id} of the same user (over quota)"))
                    continue
            else:
                pool = job.pool
                slug = None if pool == CPU_POOL else job.accelerator
                need = job.need
                node = -1
                if need not in no_fit:
                    # first_fit's first step, inline (most admissions end here): the node where
                    # the same request last fit, if it still holds it
                    node = cursor.get(need, -1)
                    cpu_m, mem_b = job.cpu_m, job.mem_b
                    if node < 0 or reserved[node] or free_cpu[node] < cpu_m or \
                            free_mem[node] < mem_b or \
                            (slug is not None and free_acc[node].get(slug, 0) < job.gpus):
                        # the cursor's node is full for this request: no earlier node holds it,
                        # so the next nodes are first-fit's next candidates; one of the next
                        # two usually holds it (a node fills for every request at about the
                        # same time), which spares the indexed search most of the time
                        held = node
                        for node in range(held + 1, min(held + 3, last)) if held >= 0 else ():
                            if not reserved[node] and free_cpu[node] >= cpu_m and \
                                    free_mem[node] >= mem_b and (slug is None or
                                                                free_acc[node].get(slug, 0) >= job.gpus):
                                cursor[need] = node
                                break
                        else:
                            node = place.first_fit(slug, job.gpus, cpu_m, mem_b, need)
                            if node < 0:
                                no_fit.add(need)
                if node >= 0:
                    if slug is not None:
                        free_acc[node][slug] -= job.gpus
                    free_cpu[node] -= cpu_m
                    free_mem[node] -= mem_b
                    admitted.append(job)
                    admitted_at.append(node)
                    state.fair += job.gpus
                    if guaranteed and job.accelerator and job.gpus:
                        state.gpus += job.gpus
                        state.acc[job.accelerator] = state.acc.get(job.accelerator, 0) + job.gpus
                        state.snap = None
                else:
                    waiting[job.id] = _WAITING
                    if (may_preempt and slug is not None and now - job.submitted >= preempt_after
                            and (pool, job.gpus) not in no_victims):
                        plan = preemptions.plan(slug, job.gpus)
                        if plan is None:
                            no_victims.add((pool, job.gpus))
                        else:
                            node, victims = plan
                            place.reserve(node)
                            name = place.names[node]
                            preempted.extend((v, job.id) for v in victims)
                            waiting[job.id] = (
                                f"preempting best-effort jobs on {name}" if victims
                                else f"waiting for preempted jobs to leave {name}")
                    if strict:
                        if index < count:
                            spans.extend((jobs, index, count, None, f"behind job {job.id} of "
                                          "the same user (waiting for capacity)"))
                        continue
            # the owner's next jobs whose outcome is already certain are settled now: refused by
            # the quota (which only the owner's own admissions change), or no fit and nothing to
            # preempt (both stay so for the rest of the cycle)
            start = index
            if checked:
                limit, caps, used, gpus_used = state.limit, state.caps, state.acc, state.gpus
                if not strict and gpus_used >= limit:
                    # the quota is full: every GPU job is refused (the common case of a heavy
                    # user), so skip to their next other job without the checks below
                    flags = flags_of[slot]
                    if flags is None:
                        flags = flags_of[slot] = ranking.quota_flags(level_key, state.name)
                    index = flags.find(0, index)
                    if index < 0:
                        index = count
            why = "waiting for capacity"
            while index < count:
                job = jobs[index]
                if checked and job.gpus and job.accelerator:
                    gpus = job.gpus
                    if gpus_used + gpus > limit or (
                            caps and (cap := caps.get(job.accelerator)) is not None
                            and used.get(job.accelerator, 0) + gpus > cap):
                        index += 1
                        if strict:
                            why = "over quota"
                            break
                        continue
                if job.need not in no_fit:
                    break  # it may fit: it waits for its turn in fair-share order
                if (may_preempt and job.pool != CPU_POOL and now - job.submitted >= preempt_after
                        and (job.pool, job.gpus) not in no_victims):
                    break  # it may preempt: likewise
                index += 1
                if strict:
                    break
            if index > start:
                spans.extend((jobs, start, index, state, state.snapshot() if checked else None))
                if strict:
                    if index < count:
                        spans.extend((jobs, index, count, None,
                                      f"behind job {jobs[index - 1].id} of the same user ({why})"))
                    continue
            if index < count:
                job = jobs[index]
                # one push-and-pop: an owner still first (a CPU job admitted leaves their fair
                # share as it was) goes on without moving through the heap
                turn = heappushpop(heap, (state.fair, job.submitted, job.id, slot, index))

    decision.admit.extend(zip(map(_ID, admitted), map(names.__getitem__, admitted_at),
                              strict=True))

    def complete(decision):
        _reasons(spans, decision.waiting)
        decision.waiting.update(waiting)
        ordered = known_order or ranked_order(jobs for lists in settled for _, jobs in lists)
        ids = [job.id for job in ordered]
        rank_of = {job_id: rank for rank, job_id in enumerate(ids)}
        taken = {job.id for job in admitted}
        levels = [[(state, ranks, [r for r in ranks if ids[r] not in taken])
                   for state, jobs in lists
                   for ranks in ([rank_of[job.id] for job in jobs],)]
                  for lists in settled]
        lines = estimates.lines(levels, len(ordered)) if strict else None
        estimates.positions_and_estimates(estimates.order(levels), levels, ordered, ids, active,
                                          zip(admitted, admitted_at, strict=True), place, server_usage,
                                          now, lines, decision)

    decision.defer(complete)
    return decision


def _reasons(spans, waiting):
    """Word why each job settled in a span waits: its owner's quota refusal at the use it was
    settled at, else no node fits it (or, strict_fifo, the job it waits behind)."""
    flat = iter(spans)  # five entries per span, flat (see schedule)
    for jobs, start, stop, state, snap in zip(flat, flat, flat, flat, flat, strict=True):
        if state is None:  # strict_fifo: behind an earlier job of the owner
            waiting.update(dict.fromkeys([job.id for job in jobs[start:stop]], snap))
            continue
        for job in jobs[start:stop]:
            why = None
            if snap is not None and job.gpus and job.accelerator:
                why = state.why(snap, job)
            waiting[job.id] = why or _WAITING
