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
from collections import defaultdict
from dataclasses import dataclass, replace
from operator import attrgetter

from ..policy.quotas import Usage, violation
from . import estimates
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

# re-exported: the engine's data lives in .model
__all__ = ["BEST_EFFORT_FIFO", "CPU_POOL", "STRATEGIES", "STRICT_FIFO", "ActiveJob", "Decision",
           "NodeFree", "QueuedJob", "schedule"]

_UNLIMITED = float("inf")
_WAITING = "waiting for capacity"


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

    __slots__ = ("name", "fair", "gpus", "acc", "quota", "limit", "caps", "whys")

    def __init__(self, name, quota):
        self.name = name
        self.fair = 0
        self.gpus = 0  # quota use: servers and guaranteed jobs
        self.acc = {}
        self.quota = quota
        self.limit = _UNLIMITED if quota is None or quota.gpus is None else quota.gpus
        self.caps = {} if quota is None else quota.accelerators
        self.whys = {}  # (gpus in use, of the accelerator, accelerator, gpus asked) -> refusal

    def refuses(self, acc, gpus):
        """Whether the quota refuses ``gpus`` more of ``acc`` (the checks of quotas.violation)."""
        if self.gpus + gpus > self.limit:
            return True
        cap = self.caps.get(acc)
        return cap is not None and self.acc.get(acc, 0) + gpus > cap

    def why(self, job):
        """``over quota: <the refusal in quotas.violation's words>``; kept, since under
        best_effort_fifo many of an owner's jobs are refused for the same reason in one cycle."""
        acc = job.accelerator
        key = (self.gpus, self.acc.get(acc, 0), acc, job.gpus)
        text = self.whys.get(key)
        if text is None:
            quota = self.quota
            if quota.servers is not None:
                quota = replace(quota, servers=None)
            text = self.whys[key] = \
                f"over quota: {violation(quota, Usage(0, self.gpus, self.acc), _Spec(job))}"
        return text




def schedule(queued, active, nodes, quotas, server_usage, now, preempt_after=None,
             strategy=BEST_EFFORT_FIFO):
    """One admission cycle.

    ``queued``: [QueuedJob]; ``active``: [ActiveJob] (admitted or running);
    ``nodes``: [NodeFree] (copied, not modified); ``quotas``: owner -> Quota or None (absent:
    unlimited); ``server_usage``: owner -> Usage of their running servers; ``now``: seconds;
    ``preempt_after``: seconds a guaranteed job waits before preempting (None: never);
    ``strategy``: ``best_effort_fifo`` or ``strict_fifo`` (the module docstring says how).

    Decides as the straightforward algorithm of the module docstring (kept in
    ``tests/unit/queue_engine_reference.py``; tests compare the two), in about linear time: jobs
    are ranked once by (submitted, id); a job whose outcome cannot depend on when it is looked at
    — refused by its owner's quota, or too big for every node this cycle with nothing to preempt
    — is settled as soon as its owner's previous job is, without a turn in the fair-share heap.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    strict = strategy == STRICT_FIFO
    decision = Decision()
    waiting = decision.waiting
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
    for job in active:
        state = owner_of(job.owner)
        state.fair += job.gpus
        if not job.best_effort and job.accelerator and job.gpus:
            state.gpus += job.gpus
            state.acc[job.accelerator] = state.acc.get(job.accelerator, 0) + job.gpus

    # rank by (submitted, id): two stable sorts on plain keys, linear when already in order
    ranked = sorted(queued, key=attrgetter("id"))
    ranked.sort(key=attrgetter("submitted"))
    ids = list(map(attrgetter("id"), ranked))
    levels = defaultdict(dict)  # (-priority, best_effort) -> owner -> [ranks]
    for rank, job in enumerate(ranked):
        level = levels[-job.priority, job.best_effort]
        ranks = level.get(job.owner)
        if ranks is None:
            level[job.owner] = [rank]
        else:
            ranks.append(rank)

    no_fit = set()  # (pool, gpus, cpu, mem) that found no node this cycle (free only shrinks)
    no_victims = set()  # (pool, gpus) for which no node could be freed this cycle
    preemptions = Preemptions(place, active)
    admit, preempted = decision.admit, decision.preempt
    admitted = []  # [(job, node index)]: they hold capacity and quota from now on
    settled = []  # per level: [(owner state, [ranks still queued])]
    heappop, heappush = heapq.heappop, heapq.heappush
    for level_key in sorted(levels):
        guaranteed = not level_key[1]
        may_preempt = guaranteed and preempt_after is not None
        lists = []
        heap = []
        for name, ranks in levels[level_key].items():
            state = owner_of(name)
            heap.append((state.fair, ranks[0], len(lists), 0))
            lists.append((state, ranks, []))
        settled.append(lists)
        heapq.heapify(heap)
        while heap:
            _, _, slot, index = heappop(heap)
            state, ranks, left = lists[slot]
            checked = guaranteed and state.quota is not None
            # this job's turn: it may take capacity or plan a preemption
            rank = ranks[index]
            job = ranked[rank]
            index += 1
            if checked and job.accelerator and job.gpus and state.refuses(job.accelerator, job.gpus):
                left.append(rank)
                waiting[job.id] = state.why(job)
                if strict:
                    _behind(job, "over quota", ranks, index, ids, waiting, left)
                    continue
            else:
                pool = job.pool
                slug = None if pool == CPU_POOL else job.accelerator
                need = (pool, job.gpus, job.cpu_m, job.mem_b)
                node = -1
                if need not in no_fit:
                    node = place.first_fit(slug, job.gpus, job.cpu_m, job.mem_b)
                    if node < 0:
                        no_fit.add(need)
                if node >= 0:
                    place.take(node, slug, job.gpus, job.cpu_m, job.mem_b)
                    admit.append((job.id, place.names[node]))
                    admitted.append((job, node))
                    state.fair += job.gpus
                    if guaranteed and job.accelerator and job.gpus:
                        state.gpus += job.gpus
                        state.acc[job.accelerator] = state.acc.get(job.accelerator, 0) + job.gpus
                else:
                    left.append(rank)
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
                        _behind(job, "waiting for capacity", ranks, index, ids, waiting, left)
                        continue
            # the owner's next jobs whose outcome is already certain are settled now: refused by
            # the quota (which only the owner's own admissions change), or no fit and nothing to
            # preempt (both stay so for the rest of the cycle)
            if checked:
                limit, caps, used, whys = state.limit, state.caps, state.acc, state.whys
            while index < len(ranks):
                rank = ranks[index]
                job = ranked[rank]
                if checked and job.accelerator and job.gpus:
                    gpus = job.gpus
                    cap = caps.get(job.accelerator)
                    if state.gpus + gpus > limit or (
                            cap is not None and used.get(job.accelerator, 0) + gpus > cap):
                        left.append(rank)
                        waiting[job.id] = whys.get(
                            (state.gpus, used.get(job.accelerator, 0), job.accelerator, gpus)
                        ) or state.why(job)
                        index += 1
                        if strict:
                            _behind(job, "over quota", ranks, index, ids, waiting, left)
                            index = len(ranks)
                        continue
                pool = job.pool
                if (pool, job.gpus, job.cpu_m, job.mem_b) not in no_fit:
                    break  # it may fit: it waits for its turn in fair-share order
                if (may_preempt and pool != CPU_POOL and now - job.submitted >= preempt_after
                        and (pool, job.gpus) not in no_victims):
                    break  # it may preempt: likewise
                left.append(rank)
                waiting[job.id] = _WAITING
                index += 1
                if strict:
                    _behind(job, "waiting for capacity", ranks, index, ids, waiting, left)
                    index = len(ranks)
            if index < len(ranks):
                heappush(heap, (state.fair, ranks[index], slot, index))

    def positions_and_estimates(decision):
        lines = estimates.lines(settled, len(ranked)) if strict else None
        estimates.positions_and_estimates(estimates.order(settled), settled, ranked, ids, active,
                                          admitted, place, server_usage, now, lines, decision)

    decision.defer(positions_and_estimates)
    return decision


def _behind(job, why, ranks, index, ids, waiting, left):
    """strict_fifo: ``job`` waits (``why``), so the owner's jobs from ``ranks[index]`` on, at
    this level, wait behind it."""
    if index < len(ranks):
        behind = f"behind job {job.id} of the same user ({why})"
        for rank in ranks[index:]:
            waiting[ids[rank]] = behind
        left.extend(ranks[index:])


