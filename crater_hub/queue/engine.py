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
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field, replace
from itertools import compress
from operator import attrgetter

from ..policy.quotas import Usage, violation

CPU_POOL = "cpu"
BEST_EFFORT_FIFO = "best_effort_fifo"
STRICT_FIFO = "strict_fifo"
STRATEGIES = (BEST_EFFORT_FIFO, STRICT_FIFO)


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
    place = _Nodes(nodes)
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
    preemptions = _Preemptions(place, active)
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

    lines = _lines(settled, len(ranked)) if strict else None
    _positions_and_estimates(_order(settled), settled, ranked, ids, active, admitted, place,
                             server_usage, now, lines, decision)
    return decision


def _behind(job, why, ranks, index, ids, waiting, left):
    """strict_fifo: ``job`` waits (``why``), so the owner's jobs from ``ranks[index]`` on, at
    this level, wait behind it."""
    if index < len(ranks):
        behind = f"behind job {job.id} of the same user ({why})"
        for rank in ranks[index:]:
            waiting[ids[rank]] = behind
        left.extend(ranks[index:])


def _order(settled):
    """The ranks of the still-queued jobs in admission order: level, then the owner's GPUs in
    use at the end of the cycle, then (submitted, id)."""
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
    return order


def _lines(settled, count):
    """strict_fifo: rank -> the number of its (level, owner) list, whose jobs start in order."""
    line_of = [0] * count
    line = 0
    for lists in settled:
        for _, _, left in lists:
            for rank in left:
                line_of[rank] = line
            line += 1
    return line_of


class _QuotaClock:
    """A limit of one owner's GPU quota during the estimate's replay — their total, or their cap
    on one accelerator — what it leaves free at ``clock``, and when the guaranteed jobs it
    counts (running, admitted, replayed) give GPUs back.

    The jobs it counts are replayed in queue order, each starting no earlier than the one before
    (``clock``): then nothing the replay placed starts after ``clock``, use only falls from
    there, and a job that fits at its start fits for its whole run — two jobs the quota cannot
    hold together never overlap. Only a limit that can bind in this replay gets a clock (see
    :func:`_quota_clocks`), so that an owner's jobs the quota cannot hold back are not ordered
    by it; where the total binds, the owner's GPU jobs of all types start in queue order (a
    later one is then never estimated before an earlier one, even where best_effort_fifo will
    let it pass: fitting it into the gaps would mean checking its whole run against every
    later-starting job of its owner's, too costly per cycle for an estimate)."""

    __slots__ = ("clock", "total", "acc", "heap", "limit", "caps", "servers", "floor", "floors")

    def __init__(self, limit, caps, state, servers, ends, now):
        self.clock = now
        self.limit, self.caps = limit, caps
        self.total = limit - state.gpus
        self.acc = {slug: cap - state.acc.get(slug, 0) for slug, cap in caps.items()}
        self.heap = sorted(ends)  # [(end, gpus, accelerator)]: a sorted list is a heap
        self.servers = servers
        # what is free once every job has ended: only the servers hold quota then
        held = servers.accelerators if servers is not None else {}
        self.floor = limit - (servers.gpus if servers is not None else 0)
        self.floors = {slug: cap - held.get(slug, 0) for slug, cap in caps.items()}

    def never(self, acc, gpus):
        """Why the quota can never hold ``gpus`` more of ``acc`` while the owner's servers run
        (once all their jobs have ended, only the servers hold quota), or None."""
        if gpus <= self.floor and gpus <= self.floors.get(acc, gpus):
            return None
        servers = self.servers
        held = servers.gpus if servers is not None else 0
        if gpus > self.limit:
            return f"it asks for more GPUs than the user's quota allows ({self.limit})"
        if gpus + held > self.limit:
            return f"the user's servers hold {held} of their quota's {self.limit} GPUs"
        cap = self.caps[acc]
        held = servers.accelerators.get(acc, 0) if servers is not None else 0
        if gpus > cap:
            return f"it asks for more {acc} GPUs than the user's quota for them allows ({cap})"
        return f"the user's servers hold {held} of their quota's {cap} {acc} GPUs"

    def book(self, t, acc, gpus, runtime):
        """Start the job at the earliest time from ``t`` (and the clock) at which the quota
        holds it, until ``runtime`` later; return that time."""
        s = t if t > self.clock else self.clock
        heap, free = self.heap, self.acc
        while heap and heap[0][0] <= s:
            _, held, slug = heapq.heappop(heap)
            self.total += held
            if slug in free:
                free[slug] += held
        while self.total < gpus or (acc in free and free[acc] < gpus):
            s, held, slug = heapq.heappop(heap)  # never() said it fits once all have ended
            self.total += held
            if slug in free:
                free[slug] += held
        self.clock = s
        self.total -= gpus
        if acc in free:
            free[acc] -= gpus
        heapq.heappush(heap, (s + runtime, gpus, acc))
        return s


def _quota_clocks(settled, ranked, pools, server_usage, ends, now):
    """owner -> pool -> the :class:`_QuotaClock` their guaranteed jobs of that accelerator start
    by, for the limits that can bind: the total when the owner's use plus all their queued
    guaranteed GPU jobs exceed it (one clock for every type), else each accelerator cap that
    use plus demand of that type exceed. A limit that cannot bind holds nothing back.
    ``pools``: the pools of the queued jobs."""
    units_of = [0 if job.best_effort or job.pool == CPU_POOL else job.units for job in ranked]
    lists = defaultdict(list)  # owner state -> their lists of queued ranks (one per level)
    for level in settled:
        for state, _, left in level:
            if left and state.quota is not None:
                lists[state].append(left)
    clocks = {}
    for state, lefts in lists.items():
        demand = sum(sum(map(units_of.__getitem__, left)) for left in lefts)
        if not demand:
            continue
        name = state.name
        if state.gpus + demand > state.limit:
            clock = _QuotaClock(state.limit, state.caps, state, server_usage.get(name),
                                ends.get(name, ()), now)
            clocks[name] = dict.fromkeys(pools, clock)
            continue
        if not state.caps:
            continue
        of_type = defaultdict(int)
        for left in lefts:
            for rank in left:
                if units_of[rank]:
                    of_type[ranked[rank].pool] += units_of[rank]
        mine = {acc: _QuotaClock(_UNLIMITED, {acc: state.caps[acc]}, state,
                                 server_usage.get(name),
                                 [e for e in ends.get(name, ()) if e[2] == acc], now)
                for acc, asked in of_type.items()
                if acc in state.caps and state.acc.get(acc, 0) + asked > state.caps[acc]}
        if mine:
            clocks[name] = mine
    return clocks


def _positions_and_estimates(order, settled, ranked, ids, active, admitted, place, server_usage,
                             now, line_of, decision):
    """Each still-queued job's 1-based position in its pool, and its estimated start: a replay of
    the queue in order, where running and admitted jobs end at start + declared (or maximum) run
    time, each job starts when its pool has room (capacity summed over nodes) and its owner's
    quota has room (:class:`_QuotaClock`), and — under strict_fifo — not before the owner's
    previous job at its level. A job holds its pool's units from the time its pool had room to
    its end, so capacity is never counted twice.

    The estimate ignores placement on nodes (but not a job bigger than any node) and later
    arrivals. A job with no estimate says why in its ``waiting`` text. The replay keeps each
    pool's releases as a heap of distinct times and the units each frees: which of several
    releases at one time is taken first changes no start time.
    """
    free = defaultdict(int)
    capacity = defaultdict(int)  # the most a pool could hold at once, to spot impossible jobs
    releases = defaultdict(dict)  # pool -> time -> units freed then
    ends = defaultdict(list)  # owner -> [(time, gpus, accelerator)] of their guaranteed jobs
    held = defaultdict(int)  # (node index, accelerator) -> devices held by running/admitted jobs
    index = place.index

    def hold(job, end, node):
        pool = job.pool
        at = releases[pool]
        at[end] = at.get(end, 0) + job.units
        capacity[pool] += job.units
        if pool != CPU_POOL:
            if node is not None:
                held[node, pool] += job.units
            if not job.best_effort:
                ends[job.owner].append((end, job.gpus, pool))

    for job in active:
        end = max(now, (job.started if job.started is not None else now) + job.runtime)
        hold(job, end, index.get(job.node) if job.node else None)
    for job, node in admitted:
        hold(job, now + job.runtime, node)
    largest = {}  # accelerator -> the most devices one node could hold once its jobs have ended
    for i, (acc, term, cpu) in enumerate(zip(place.acc, place.term, place.cpu, strict=True)):
        for slug, n in acc.items():
            here = n + term.get(slug, 0)
            free[slug] += here
            capacity[slug] += here
            here += held.get((i, slug), 0)
            if here > largest.get(slug, -1):
                largest[slug] = here
        free[CPU_POOL] += cpu
    positions, estimated, waiting = decision.positions, decision.estimated_start, decision.waiting
    pool_of = list(map(attrgetter("pool"), ranked))
    pools_in_order = list(map(pool_of.__getitem__, order))
    queued_pools = set(pools_in_order)
    clocks = _quota_clocks(settled, ranked, queued_pools, server_usage, ends, now)
    for pool in queued_pools:
        mine = list(compress(order, map(pool.__eq__, pools_in_order)))
        positions.update(zip(map(ids.__getitem__, mine), range(1, len(mine) + 1), strict=True))
    heappop, heappush = heapq.heappop, heapq.heappush
    pools = {}  # pool -> [heap of release times, time -> units, free units, capacity, clock]
    # strict_fifo (``line_of``: rank -> its owner's list at its level): per list, the previous
    # job's start (None: it has no estimate) and id
    strict = line_of is not None
    lines = {}
    for rank in order:
        job = ranked[rank]
        job_id = ids[rank]
        pool = job.pool
        state = pools.get(pool)
        if state is None:
            at = releases[pool]
            heap = list(at)
            heapq.heapify(heap)
            state = pools[pool] = [heap, at, free[pool], capacity[pool], now]
        units = job.units
        floor = now
        why = line = clock = None
        if strict:
            line = line_of[rank]
            previous = lines.get(line)
            if previous is not None:
                if previous[0] is None:
                    why = f"it is behind job {previous[1]} of the same user, which has none"
                else:
                    floor = previous[0]
        if why is not None:
            pass
        elif pool != CPU_POOL:
            if units > largest.get(pool, 0):
                why = (f"no node has {units} {pool} GPUs, even after the running jobs end "
                       f"(at most {largest[pool]})" if pool in largest
                       else f"no node has {pool} GPUs")
            elif not job.best_effort:
                clock = clocks.get(job.owner)
                if clock is not None:
                    clock = clock.get(pool)
                    if clock is not None and (units > clock.floor or pool in clock.floors):
                        why = clock.never(pool, units)
        elif units > state[3] + state[2]:
            # the CPU pool's limit counts its free millicores as they are now in the replay
            why = f"no room for {units}m CPU even after the running jobs end"
        if why is None:
            heap, at, have = state[0], state[1], state[2]
            t = state[4]
            if have < units:
                while have < units and heap:
                    t = heappop(heap)
                    have += at.pop(t)
                if have < units:
                    state[2] = have
                    why = f"no room for {units}m CPU even after the running jobs end"
                else:
                    state[4] = t
        if why is not None:
            estimated[job_id] = None
            waiting[job_id] = f"{waiting[job_id]}; no estimated start: {why}"
            if strict and (previous is None or previous[0] is not None):
                lines[line] = (None, job_id)
            continue
        state[2] = have - units
        if t < floor:
            t = floor
        if clock is not None:
            t = clock.book(t, pool, units, job.runtime)
        end = t + job.runtime
        if end in at:
            at[end] += units
        else:
            at[end] = units
            heappush(heap, end)
        estimated[job_id] = t
        if strict:
            lines[line] = (t, job_id)
