"""Queue positions and estimated starts, for :class:`crater_hub.queue.model.Decision`: each
still-queued job's 1-based position in its pool, and a replay of the queue in admission order
that estimates when it starts. :func:`crater_hub.queue.engine.schedule` defers this work to the
first read of a decision (it costs more than the admissions, and only matters when read).
"""

import heapq
from collections import defaultdict
from itertools import compress
from operator import attrgetter

from .model import CPU_POOL

_UNLIMITED = float("inf")


def order(settled):
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


def lines(settled, count):
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


def positions_and_estimates(order, settled, ranked, ids, active, admitted, place, server_usage,
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

