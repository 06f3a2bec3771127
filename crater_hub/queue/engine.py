"""The embedded admission engine: pure functions over plain data, no I/O, no clock of its own.

One call, :func:`schedule`, takes the queued jobs, the admitted or running ones, the users'
quotas and server usage and the free capacity per node, and returns what to admit (and on which
node it was counted), what to preempt, and each remaining job's queue position and estimated
start. The service calls it on every change; tests call it with literals.

Order: priority class value (higher first; guaranteed before best-effort at equal value), then
fair share (the owner using fewer GPUs now — servers and jobs — first, re-evaluated after every
admission), then FIFO (submit time, then id). A job that does not fit the capacity does not block
the jobs behind it (as Kueue's BestEffortFIFO); one refused by its owner's quota stops its owner's
queue at that level, so a user's jobs start in the order they were submitted.

Quota: a guaranteed job is admitted only if the owner's servers and guaranteed jobs, plus it,
stay within the quota (:func:`crater_hub.policy.quotas.violation`; the ``servers`` limit is for
servers only). Best-effort jobs ignore quota and take idle capacity; they are preempted when a
guaranteed job has waited longer than ``preempt_after`` and evicting best-effort jobs on one node
would let it start there.
"""

import heapq
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field, replace
from itertools import compress
from operator import attrgetter

from ..policy.quotas import Usage, violation

CPU_POOL = "cpu"


@dataclass(frozen=True, slots=True)
class QueuedJob:
    id: int
    owner: str
    priority: int = 0
    best_effort: bool = False
    accelerator: str | None = None  # slug; None: a CPU-only job
    gpus: int = 0
    cpu_m: int = 0  # requested millicores
    mem_b: int = 0  # requested bytes
    submitted: float = 0.0  # seconds (epoch or any clock shared with ``now``)
    runtime: float = 3600.0  # declared or maximum run time, seconds
    #: derived: the pool it competes in (accelerator slug, or "cpu") and what it takes from it
    #: (GPUs, or millicores for CPU-only jobs); plain attributes, read 10^5 times per cycle
    pool: str = field(init=False, repr=False, compare=False)
    units: int = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        pool = self.accelerator if self.accelerator and self.gpus else CPU_POOL
        object.__setattr__(self, "pool", pool)
        object.__setattr__(self, "units", self.gpus if pool != CPU_POOL else self.cpu_m)


@dataclass(frozen=True, slots=True)
class ActiveJob(QueuedJob):
    node: str | None = None  # where its pod is bound; None while not yet placed
    started: float | None = None  # admitted or started time


@dataclass
class NodeFree:
    """What a Ready, schedulable node has free now (``terminating``: held by pods of jobs that
    were already preempted or cancelled, free once they are gone)."""

    name: str
    accelerators: dict = field(default_factory=dict)  # slug -> free devices
    cpu_m: int = 0
    mem_b: int = 0
    terminating: dict = field(default_factory=dict)  # slug -> devices being released


@dataclass
class Decision:
    admit: list = field(default_factory=list)  # [(job_id, node name)]
    preempt: list = field(default_factory=list)  # [(victim job id, for job id)]
    positions: dict = field(default_factory=dict)  # job id -> 1-based position in its pool
    estimated_start: dict = field(default_factory=dict)  # job id -> seconds or None
    waiting: dict = field(default_factory=dict)  # job id -> why it is still queued


class _Spec:  # the shape quotas.violation reads
    __slots__ = ("accelerator", "gpus")

    def __init__(self, job):
        self.accelerator = _Slug(job.accelerator, job.accelerator) if job.accelerator else None
        self.gpus = job.gpus


@dataclass(frozen=True)
class _Slug:
    slug: str
    display_name: str


_UNLIMITED = float("inf")
_WAITING = "waiting for capacity"
_BLOCK = 64  # nodes per block of the placement index


class _Nodes:
    """The nodes' free capacity, copied, with an index for first-fit placement.

    Nodes are split into blocks of consecutive nodes, each with an upper bound of the free CPU,
    memory and devices (per accelerator) of its unreserved nodes; a search skips the blocks whose
    bounds cannot hold the request and scans the others in order, so it finds the same node as a
    scan of the whole list. Free capacity only shrinks and reserved nodes only grow during a cycle,
    so a bound stays an upper bound without being updated; a block whose scan found nothing gets
    its bounds recomputed, exactly."""

    def __init__(self, nodes):
        self.names = [n.name for n in nodes]
        self.acc = [dict(n.accelerators) for n in nodes]
        self.cpu = [n.cpu_m for n in nodes]
        self.mem = [n.mem_b for n in nodes]
        self.term = [n.terminating for n in nodes]  # read only
        self.reserved = [False] * len(nodes)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.slugs = {slug for acc in self.acc for slug in acc}
        count = len(nodes)
        self.blocks = [range(start, min(start + _BLOCK, count)) for start in range(0, count, _BLOCK)]
        self.bcpu = [0] * len(self.blocks)
        self.bmem = [0] * len(self.blocks)
        self.bacc = {slug: [0] * len(self.blocks) for slug in self.slugs}
        self.cursor = {}  # request -> the node that last held it
        for b in range(len(self.blocks)):
            self._bound(b)

    def _bound(self, b):
        block = self.blocks[b]
        live = [i for i in block if not self.reserved[i]]
        cpu, mem, acc = self.cpu, self.mem, self.acc
        self.bcpu[b] = max([cpu[i] for i in live], default=0)
        self.bmem[b] = max([mem[i] for i in live], default=0)
        for slug, bounds in self.bacc.items():
            bounds[b] = max([acc[i].get(slug, 0) for i in live], default=0)

    def first_fit(self, slug, gpus, cpu_m, mem_b):
        """The first unreserved node that holds the request (``slug``: None for a CPU-only
        job, whose devices are not counted), or -1.

        The answer for one request can only move later in the list during a cycle, so the search
        for it starts where it last found a node."""
        bcpu, bmem = self.bcpu, self.bmem
        if slug is None:
            bacc = None
        else:
            bacc = self.bacc.get(slug)
            if bacc is None:
                return -1  # no node has the accelerator (gpus > 0 in a device pool)
        acc, cpu, mem, reserved = self.acc, self.cpu, self.mem, self.reserved
        key = (slug, gpus, cpu_m, mem_b)
        start = self.cursor.get(key, 0)
        for b in range(start // _BLOCK, len(self.blocks)):
            if bcpu[b] < cpu_m or bmem[b] < mem_b or (bacc is not None and bacc[b] < gpus):
                continue
            block = self.blocks[b]
            for i in block if block.start >= start else range(start, block.stop):
                if reserved[i] or cpu[i] < cpu_m or mem[i] < mem_b:
                    continue
                if bacc is None or acc[i].get(slug, 0) >= gpus:
                    self.cursor[key] = i
                    return i
            if block.start >= start:
                self._bound(b)
        return -1

    def take(self, i, slug, gpus, cpu_m, mem_b):
        if slug is not None:
            self.acc[i][slug] -= gpus
        self.cpu[i] -= cpu_m
        self.mem[i] -= mem_b

    def reserve(self, i):
        self.reserved[i] = True  # the block's bounds stay upper bounds


class _Preemptions:
    """Preemption plans without scanning every node and active job for each waiting job.

    For one (accelerator, devices) request the answer is the first unreserved node (in order)
    whose free plus terminating devices suffice; else the node where evicting best-effort jobs
    (lowest priority, then newest first) frees enough at the least cost (devices, jobs, name).
    Victims sit on one node, a plan reserves its node, and free devices only shrink: so each
    node's plan can only get dearer, and a heap of per-node costs checked when they reach the top
    (recomputed when that node's free devices changed) gives the cheapest plan in turn.
    """

    def __init__(self, nodes, active):
        self.nodes = nodes
        self.active = active
        self.victims = None  # slug -> node index -> ([victim ids], [prefix sums of devices])
        self.direct = {}  # (slug, gpus) -> [node indices, first unchecked position]
        self.plans = {}  # (slug, gpus) -> heap of (devices, jobs, name, node, free then)

    def _victims(self):
        by_node = defaultdict(list)
        index = self.nodes.index
        for a in self.active:
            if a.best_effort and a.node and a.node in index:
                by_node[(a.accelerator, index[a.node])].append(a)
        out = defaultdict(dict)
        for (slug, i), jobs in by_node.items():
            jobs.sort(key=lambda a: (a.priority, -(a.started or 0), -a.id))
            prefix = [0]
            for a in jobs:
                prefix.append(prefix[-1] + a.gpus)
            out[slug][i] = ([a.id for a in jobs], prefix)
        self.victims = out

    def _have(self, i, slug):
        return self.nodes.acc[i][slug] + self.nodes.term[i].get(slug, 0)

    def _cost(self, i, slug, gpus):
        ids, prefix = self.victims[slug][i]
        have = self._have(i, slug)
        k = bisect_left(prefix, gpus - have)
        if k == len(prefix):
            return None
        return (prefix[k], k, self.nodes.names[i], i, self.nodes.acc[i][slug])

    def plan(self, slug, gpus):
        """(node index, [victim ids]) or None."""
        if self.victims is None:
            self._victims()
        nodes, key = self.nodes, (slug, gpus)
        direct = self.direct.get(key)
        if direct is None:
            direct = self.direct[key] = [
                [i for i in range(len(nodes.names))
                 if slug in nodes.acc[i] and self._have(i, slug) >= gpus], 0]
        candidates, at = direct
        while at < len(candidates):
            i = candidates[at]
            if not nodes.reserved[i] and self._have(i, slug) >= gpus:
                direct[1] = at
                return i, []
            at += 1
        direct[1] = at
        heap = self.plans.get(key)
        if heap is None:
            heap = []
            for i in self.victims.get(slug, {}):
                if slug in nodes.acc[i]:
                    cost = self._cost(i, slug, gpus)
                    if cost is not None:
                        heap.append(cost)
            heapq.heapify(heap)
            self.plans[key] = heap
        while heap:
            _, k, _, i, free = heap[0]
            if nodes.reserved[i]:
                heapq.heappop(heap)
            elif nodes.acc[i][slug] != free:
                cost = self._cost(i, slug, gpus)
                if cost is None:
                    heapq.heappop(heap)
                else:
                    heapq.heapreplace(heap, cost)
            else:
                return i, self.victims[slug][i][0][:k]
        return None


class _Owner:
    """An owner's standing during a cycle: GPUs in use (fair share), quota use and limits."""

    __slots__ = ("fair", "gpus", "acc", "quota", "limit", "caps")

    def __init__(self, quota):
        self.fair = 0
        self.gpus = 0  # quota use: servers and guaranteed jobs
        self.acc = {}
        self.quota = quota
        self.limit = _UNLIMITED if quota is None or quota.gpus is None else quota.gpus
        self.caps = {} if quota is None else quota.accelerators

    def refuses(self, acc, gpus):
        """Whether the quota refuses ``gpus`` more of ``acc`` (the checks of quotas.violation)."""
        if self.gpus + gpus > self.limit:
            return True
        cap = self.caps.get(acc)
        return cap is not None and self.acc.get(acc, 0) + gpus > cap

    def why(self, job):
        quota = self.quota
        if quota.servers is not None:
            quota = replace(quota, servers=None)
        return violation(quota, Usage(0, self.gpus, self.acc), _Spec(job))


def schedule(queued, active, nodes, quotas, server_usage, now, preempt_after=None):
    """One admission cycle.

    ``queued``: [QueuedJob]; ``active``: [ActiveJob] (admitted or running);
    ``nodes``: [NodeFree] (copied, not modified); ``quotas``: owner -> Quota or None (absent:
    unlimited); ``server_usage``: owner -> Usage of their running servers; ``now``: seconds;
    ``preempt_after``: seconds a guaranteed job waits before preempting (None: never).

    Decides as the straightforward algorithm of the module docstring (kept in
    ``tests/unit/queue_engine_reference.py``; tests compare the two), in about linear time: jobs
    are ranked once by (submitted, id); a job whose outcome cannot depend on when it is looked at
    — refused by its owner's quota, or too big for every node this cycle with nothing to preempt
    — is settled as soon as its owner's previous job is, without a turn in the fair-share heap.
    """
    decision = Decision()
    waiting = decision.waiting
    place = _Nodes(nodes)
    owners = {}

    def owner_of(name):
        state = owners.get(name)
        if state is None:
            state = owners[name] = _Owner(quotas.get(name))
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
    preemptions = _Preemptions(place, active)
    admit, preempted = decision.admit, decision.preempt
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
                _refuse(state, job, ranks, index - 1, ids, waiting, left)
                continue
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
            # the owner's next jobs whose outcome is already certain are settled now: refused by
            # the quota (which only the owner's own admissions change), or no fit and nothing to
            # preempt (both stay so for the rest of the cycle)
            if checked:
                limit, caps, used = state.limit, state.caps, state.acc
            while index < len(ranks):
                rank = ranks[index]
                job = ranked[rank]
                if checked and job.accelerator and job.gpus:
                    gpus = job.gpus
                    cap = caps.get(job.accelerator)
                    if state.gpus + gpus > limit or (
                            cap is not None and used.get(job.accelerator, 0) + gpus > cap):
                        _refuse(state, job, ranks, index, ids, waiting, left)
                        index = len(ranks)
                        break
                pool = job.pool
                if (pool, job.gpus, job.cpu_m, job.mem_b) not in no_fit:
                    break  # it may fit: it waits for its turn in fair-share order
                if (may_preempt and pool != CPU_POOL and now - job.submitted >= preempt_after
                        and (pool, job.gpus) not in no_victims):
                    break  # it may preempt: likewise
                left.append(rank)
                waiting[job.id] = _WAITING
                index += 1
            if index < len(ranks):
                heappush(heap, (state.fair, ranks[index], slot, index))

    orders = _orders(settled, ranked)
    _positions_and_estimates(orders, ranked, ids, active, place, owners, now, decision)
    return decision


def _refuse(state, job, ranks, index, ids, waiting, left):
    """``ranks[index]`` (``job``) is over its owner's quota: it and the owner's later jobs at
    this level wait."""
    waiting[job.id] = f"over quota: {state.why(job)}"
    if index + 1 < len(ranks):
        behind = f"behind job {job.id} of the same user (over quota)"
        for rank in ranks[index + 1:]:
            waiting[ids[rank]] = behind
    left.extend(ranks[index:])


def _orders(settled, ranked):
    """pool -> the ranks of its still-queued jobs in admission order: level, then the owner's
    GPUs in use at the end of the cycle, then (submitted, id)."""
    order = []
    for lists in settled:
        by_fair = defaultdict(list)
        for state, _, left in lists:
            if left:
                by_fair[state.fair].append(left)
        for fair in sorted(by_fair):
            groups = by_fair[fair]
            if len(groups) == 1:
                order.extend(groups[0])
            else:
                merged = [rank for left in groups for rank in left]
                merged.sort()
                order.extend(merged)
    pool_of = list(map(attrgetter("pool"), ranked))
    pools = list(map(pool_of.__getitem__, order))
    kinds = set(pools)
    if len(kinds) <= 1:
        return {pool: order for pool in kinds}
    return {pool: list(compress(order, map(pool.__eq__, pools))) for pool in kinds}


_ANY_TIME = float("-inf")


def _quota_start(state, ends, gpus):
    """The earliest time the owner's own GPU quota lets them start ``gpus`` more (-inf: any
    time), or None (never): their guaranteed jobs end in turn (``ends``: sorted (time, gpus))."""
    excess = state.gpus + gpus - state.quota.gpus
    start = _ANY_TIME
    for end, held in ends:
        if excess <= 0:
            break
        start = end
        excess -= held
    return None if excess > 0 else start


def _positions_and_estimates(orders, ranked, ids, active, place, owners, now, decision):
    """Each still-queued job's 1-based position in its pool, and its estimated start: a replay of
    its pool in queue order, where running jobs end at start + declared (or maximum) run time,
    and the owner's own quota frees likewise.

    The estimate ignores placement on nodes and later arrivals; a job no node can ever hold gets
    None. The replay keeps its releases as a heap of distinct times and the units each frees:
    which of several releases at one time is taken first changes no start time.
    """
    free = defaultdict(int)
    capacity = defaultdict(int)  # the most a pool could hold at once, to spot impossible jobs
    for acc, term, cpu in zip(place.acc, place.term, place.cpu, strict=True):
        for slug, n in acc.items():
            held = n + term.get(slug, 0)
            free[slug] += held
            capacity[slug] += held
        free[CPU_POOL] += cpu
    releases = defaultdict(dict)  # pool -> time -> units freed then
    ends = defaultdict(list)  # owner -> [(time, gpus)] of their guaranteed jobs
    for job in active:
        end = max(now, (job.started if job.started is not None else now) + job.runtime)
        at = releases[job.pool]
        at[end] = at.get(end, 0) + job.units
        capacity[job.pool] += job.units
        if not job.best_effort and job.gpus:
            ends[job.owner].append((end, job.gpus))
    for owned in ends.values():
        owned.sort()
    # owner -> {gpus: _quota_start}, for the owners whose quota limits GPUs
    bounds = {name: {} for name, state in owners.items()
              if state.quota is not None and state.quota.gpus is not None}
    positions, estimated = decision.positions, decision.estimated_start
    heappop, heappush = heapq.heappop, heapq.heappush
    for pool, order in orders.items():
        at = releases[pool]
        heap = list(at)
        heapq.heapify(heap)
        have = free[pool]
        # the CPU pool's limit counts its free millicores as they are now in the replay
        most, cpu = capacity[pool], pool == CPU_POOL
        clock = now
        starts = []
        add = starts.append
        for job in list(map(ranked.__getitem__, order)):
            units = job.units
            if units > most and (not cpu or units > most + have):
                add(None)
                continue
            t = clock
            if have < units:
                while have < units and heap:
                    t = heappop(heap)
                    have += at.pop(t)
                if have < units:
                    add(None)
                    continue
                clock = t
            have -= units
            end = t + job.runtime
            if end in at:
                at[end] += units
            else:
                at[end] = units
                heappush(heap, end)
            gpus = job.gpus
            if gpus and not job.best_effort:
                own = bounds.get(job.owner)
                if own is not None:
                    bound = own.get(gpus, own)
                    if bound is own:
                        bound = own[gpus] = _quota_start(
                            owners[job.owner], ends.get(job.owner, ()), gpus)
                    if bound is None:
                        t = None
                    elif bound > t:
                        t = bound
            add(t)
        job_ids = list(map(ids.__getitem__, order))
        positions.update(zip(job_ids, range(1, len(job_ids) + 1), strict=True))
        estimated.update(zip(job_ids, starts, strict=True))
