"""The admission engine as it was first written: a straightforward reference for the fast
:func:`crater_hub.queue.engine.schedule`, which must decide exactly as this does (tests compare the
two on randomized inputs; ``benchmarks/queue_cycle.py`` times both).

Each job is tried in turn from per-level, per-owner sorted lists; a placement scans the nodes in
order; a preemption plan scans every node and every active job; positions and estimates sort the
remaining jobs again. Kept unoptimized on purpose.
"""

import heapq
from collections import defaultdict
from dataclasses import dataclass, replace

from crater_hub.policy.quotas import Quota, Usage, violation
from crater_hub.queue.engine import CPU_POOL, Decision, NodeFree


def _usage_add(usage, job, sign=1):
    if job.accelerator and job.gpus:
        acc = dict(usage.accelerators)
        acc[job.accelerator] = acc.get(job.accelerator, 0) + sign * job.gpus
        return Usage(usage.servers, usage.gpus + sign * job.gpus, acc)
    return usage


class _Spec:  # the shape quotas.violation reads
    __slots__ = ("accelerator", "gpus")

    def __init__(self, job):
        self.accelerator = _Slug(job.accelerator, job.accelerator) if job.accelerator else None
        self.gpus = job.gpus


@dataclass(frozen=True)
class _Slug:
    slug: str
    display_name: str


def quota_refusal(quota, usage, job):
    """Why ``job`` would break ``quota`` on top of ``usage`` (servers not counted), or None."""
    if quota is None or job.best_effort or not job.gpus:
        return None
    if quota.servers is not None:
        quota = replace(quota, servers=None)
    return violation(quota, usage, _Spec(job))


def _fits(node, job):
    if job.pool != CPU_POOL and node.accelerators.get(job.accelerator, 0) < job.gpus:
        return False
    return node.cpu_m >= job.cpu_m and node.mem_b >= job.mem_b


def _take(node, job):
    if job.pool != CPU_POOL:
        node.accelerators[job.accelerator] -= job.gpus
    node.cpu_m -= job.cpu_m
    node.mem_b -= job.mem_b


def order_key(job, gpus_in_use):
    return (-job.priority, job.best_effort, gpus_in_use, job.submitted, job.id)


def schedule(queued, active, nodes, quotas, server_usage, now, preempt_after=None,
             strategy="best_effort_fifo"):
    """One admission cycle.

    ``queued``: [QueuedJob]; ``active``: [ActiveJob] (admitted or running);
    ``nodes``: [NodeFree] (copied, not modified); ``quotas``: owner -> Quota or None (absent:
    unlimited); ``server_usage``: owner -> Usage of their running servers; ``now``: seconds;
    ``preempt_after``: seconds a guaranteed job waits before preempting (None: never);
    ``strategy``: ``best_effort_fifo`` (a waiting job lets its owner's later jobs at its level
    pass) or ``strict_fifo`` (it holds them back).
    """
    strict = strategy == "strict_fifo"
    nodes = [NodeFree(n.name, dict(n.accelerators), n.cpu_m, n.mem_b, dict(n.terminating))
             for n in nodes]
    decision = Decision()
    # quota usage counts servers and guaranteed jobs; fair share counts every GPU in use
    quota_use = defaultdict(Usage)
    fair = defaultdict(int)
    quotas = {owner: replace(quota, servers=None) if quota is not None else None
              for owner, quota in quotas.items()}
    for owner, usage in server_usage.items():
        quota_use[owner] = usage
        fair[owner] = usage.gpus
    for job in active:
        fair[job.owner] += job.gpus
        if not job.best_effort:
            quota_use[job.owner] = _usage_add(quota_use[job.owner], job)

    levels = defaultdict(lambda: defaultdict(list))  # (priority, best_effort) -> owner -> jobs
    for job in queued:
        levels[(-job.priority, job.best_effort)][job.owner].append(job)
    no_fit = set()  # (pool, gpus, cpu, mem) that found no node this cycle (free only shrinks)
    reserved = set()  # nodes held for a job whose preemption is under way
    remaining = []
    admitted = []  # [(job, node name)]
    victims_taken = set()
    no_victims = set()  # (pool, gpus) for which no node could be freed this cycle
    for level in sorted(levels):
        owners = levels[level]
        heap = []
        for owner, jobs in owners.items():
            jobs.sort(key=lambda j: (j.submitted, j.id))
            heap.append((fair[owner], jobs[0].submitted, jobs[0].id, owner, 0))
        heapq.heapify(heap)
        while heap:
            _, _, _, owner, index = heapq.heappop(heap)
            jobs = owners[owner]
            job = jobs[index]
            why = quota_refusal(quotas.get(owner), quota_use[owner], job)
            waits = None
            if why:
                decision.waiting[job.id] = f"over quota: {why}"
                remaining.append(job)
                waits = "over quota"
            else:
                need = (job.pool, job.gpus, job.cpu_m, job.mem_b)
                node = None
                if need not in no_fit:
                    node = next((n for n in nodes if n.name not in reserved and _fits(n, job)), None)
                    if node is None:
                        no_fit.add(need)
                if node is not None:
                    _take(node, job)
                    decision.admit.append((job.id, node.name))
                    admitted.append((job, node.name))
                    fair[owner] += job.gpus
                    if not job.best_effort:
                        quota_use[owner] = _usage_add(quota_use[owner], job)
                else:
                    remaining.append(job)
                    waits = "waiting for capacity"
                    decision.waiting[job.id] = "waiting for capacity"
                    if (preempt_after is not None and not job.best_effort and job.pool != CPU_POOL
                            and now - job.submitted >= preempt_after
                            and (job.pool, job.gpus) not in no_victims):
                        plan = _preemption(job, nodes, active, reserved, victims_taken)
                        if plan is None:
                            no_victims.add((job.pool, job.gpus))
                        else:
                            node_name, victims = plan
                            reserved.add(node_name)
                            victims_taken.update(victims)
                            decision.preempt.extend((v, job.id) for v in victims)
                            decision.waiting[job.id] = (
                                f"preempting best-effort jobs on {node_name}" if victims
                                else f"waiting for preempted jobs to leave {node_name}")
            if strict and waits:
                for later in jobs[index + 1:]:
                    decision.waiting[later.id] = f"behind job {job.id} of the same user ({waits})"
                    remaining.append(later)
                continue
            if index + 1 < len(jobs):
                nxt = jobs[index + 1]
                heapq.heappush(heap, (fair[owner], nxt.submitted, nxt.id, owner, index + 1))

    _positions(remaining, fair, decision)
    _estimates(remaining, active, admitted, nodes, quotas, quota_use, server_usage, fair, now,
               strict, decision)
    return decision


def _preemption(job, nodes, active, reserved, taken):
    """(node, [victim ids]) freeing enough on one node for ``job``, fewest devices evicted; a
    node already being freed (terminating pods) needs no new victim. None when no node works."""
    candidates = defaultdict(list)
    for a in active:
        if a.best_effort and a.node and a.accelerator == job.accelerator and a.id not in taken:
            candidates[a.node].append(a)
    best = None
    for node in nodes:
        if node.name in reserved or job.accelerator not in node.accelerators:
            continue
        have = node.accelerators[job.accelerator] + node.terminating.get(job.accelerator, 0)
        if have >= job.gpus:
            return node.name, []
        victims = sorted(candidates.get(node.name, ()),
                         key=lambda a: (a.priority, -(a.started or 0), -a.id))
        chosen = []
        for victim in victims:
            if have >= job.gpus:
                break
            chosen.append(victim)
            have += victim.gpus
        if have >= job.gpus:
            cost = (sum(v.gpus for v in chosen), len(chosen), node.name)
            if best is None or cost < best[0]:
                best = (cost, node.name, [v.id for v in chosen])
    return None if best is None else (best[1], best[2])


def _positions(remaining, fair, decision):
    """1-based rank of each still-queued job among those of its pool, in admission order."""
    by_pool = defaultdict(list)
    for job in remaining:
        by_pool[job.pool].append(job)
    for jobs in by_pool.values():
        jobs.sort(key=lambda j: order_key(j, fair[j.owner]))
        for i, job in enumerate(jobs, 1):
            decision.positions[job.id] = i


def _estimates(remaining, active, admitted, nodes, quotas, quota_use, server_usage, fair, now,
               strict, decision):
    """Estimated start per queued job: a replay of the queue in admission order, where running
    and admitted jobs end at start + declared (or maximum) run time; a job starts when its pool
    has room, when its owner's quota has room (the owner's jobs starting in queue order), and
    under strict_fifo not before the owner's previous job at its level.

    It ignores placement on nodes, except a job bigger than any node, and later arrivals; a job
    with no estimate gets None and says why in its ``waiting`` text.
    """
    free = defaultdict(int)
    for node in nodes:
        for slug, n in node.accelerators.items():
            free[slug] += n + node.terminating.get(slug, 0)
        free[CPU_POOL] += node.cpu_m
    running = [(job, max(now, (job.started if job.started is not None else now) + job.runtime),
                job.node) for job in active]
    running += [(job, now + job.runtime, node) for job, node in admitted]
    releases = defaultdict(list)  # pool -> heap of (time, units)
    holdings = defaultdict(list)  # owner -> [(end, gpus, accelerator)] of their guaranteed jobs
    for job, end, _ in running:
        releases[job.pool].append((end, job.units))
        if not job.best_effort and job.pool != CPU_POOL:
            holdings[job.owner].append((end, job.gpus, job.accelerator))
    for heap in releases.values():
        heapq.heapify(heap)
    capacity = defaultdict(int)  # the most a pool could hold at once, to spot impossible jobs
    held = defaultdict(int)  # (node, accelerator) -> devices its running and admitted jobs hold
    for job, _, on in running:
        held[on, job.pool] += job.units
    largest = {}  # accelerator -> the most one node could hold once its jobs end
    for node in nodes:
        for slug in node.accelerators:
            here = node.accelerators[slug] + node.terminating.get(slug, 0)
            capacity[slug] += here
            largest[slug] = max(largest.get(slug, 0), here + held[node.name, slug])
    for job, _, _ in running:
        capacity[job.pool] += job.units
    clock = defaultdict(lambda: now)  # pool -> the replay's time
    owner_clock = defaultdict(lambda: now)  # binding limit -> the start of its last replayed job
    demand = defaultdict(int)  # owner -> GPUs their queued guaranteed jobs ask for
    demand_acc = defaultdict(int)  # (owner, accelerator) -> the same, of one type
    for job in remaining:
        if not job.best_effort and job.pool != CPU_POOL:
            demand[job.owner] += job.units
            demand_acc[job.owner, job.pool] += job.units

    def binding(job):
        """The owner's quota limit that can hold ``job`` back in this replay, as (key, quota of
        that limit alone), or None: the total when use + all their queued demand exceed it,
        else the job's accelerator cap when use + demand of that type exceed it."""
        quota = quotas.get(job.owner)
        if quota is None or job.best_effort or job.pool == CPU_POOL:
            return None
        use = quota_use[job.owner]
        if quota.gpus is not None and use.gpus + demand[job.owner] > quota.gpus:
            return job.owner, quota
        cap = quota.accelerators.get(job.accelerator)
        if cap is not None and (use.accelerators.get(job.accelerator, 0)
                                + demand_acc[job.owner, job.accelerator] > cap):
            return (job.owner, job.accelerator), Quota(accelerators={job.accelerator: cap})
        return None

    lines = {}  # strict_fifo: (owner, priority, best_effort) -> (start or None, job id)
    for job in sorted(remaining, key=lambda j: order_key(j, fair[j.owner])):
        pool = job.pool
        why = None
        floor = now
        line = (job.owner, job.priority, job.best_effort)
        if strict and line in lines:
            before, before_id = lines[line]
            if before is None:
                why = f"it is behind job {before_id} of the same user, which has none"
            else:
                floor = before
        limit = binding(job)
        if why is None:
            if pool == CPU_POOL:
                if job.units > capacity[pool] + free[pool]:
                    why = f"no room for {job.units}m CPU even after the running jobs end"
            elif pool not in largest:
                why = f"no node has {pool} GPUs"
            elif job.units > largest[pool]:
                why = (f"no node has {job.units} {pool} GPUs, even after the running jobs end "
                       f"(at most {largest[pool]})")
            elif limit is not None:
                why = _never(limit[1], server_usage.get(job.owner), job)
        if why is None:
            heap = releases[pool]
            t = clock[pool]
            while free[pool] < job.units and heap:
                t, units = heapq.heappop(heap)
                free[pool] += units
            if free[pool] < job.units:
                why = f"no room for {job.units}m CPU even after the running jobs end"
        if why is not None:
            decision.estimated_start[job.id] = None
            decision.waiting[job.id] += f"; no estimated start: {why}"
            if strict and (line not in lines or lines[line][0] is not None):
                lines[line] = (None, job.id)
            continue
        clock[pool] = t
        free[pool] -= job.units
        start = max(t, floor)
        if limit is not None:
            key, quota = limit
            start = _quota_start(quota, server_usage.get(job.owner), holdings[job.owner],
                                 max(start, owner_clock[key]), job)
            owner_clock[key] = start
            holdings[job.owner].append((start + job.runtime, job.gpus, job.accelerator))
        heapq.heappush(releases[pool], (start + job.runtime, job.units))
        decision.estimated_start[job.id] = start
        lines[line] = (start, job.id)


def _never(quota, servers, job):
    """Why the owner's quota can never hold ``job`` while their servers run, or None."""
    limit = float("inf") if quota.gpus is None else quota.gpus
    held = servers.gpus if servers is not None else 0
    if job.gpus > limit:
        return f"it asks for more GPUs than the user's quota allows ({limit})"
    if job.gpus + held > limit:
        return f"the user's servers hold {held} of their quota's {limit} GPUs"
    cap = quota.accelerators.get(job.accelerator)
    if cap is not None:
        held = servers.accelerators.get(job.accelerator, 0) if servers is not None else 0
        if job.gpus > cap:
            return (f"it asks for more {job.accelerator} GPUs than the user's quota for them "
                    f"allows ({cap})")
        if job.gpus + held > cap:
            return f"the user's servers hold {held} of their quota's {cap} {job.accelerator} GPUs"
    return None


def _quota_start(quota, servers, holdings, earliest, job):
    """The first time from ``earliest`` at which the owner's servers and guaranteed jobs still
    holding GPUs then, plus ``job``, stay within the quota (every holding starts by ``earliest``,
    so use only falls after it)."""
    for t in sorted({earliest} | {end for end, _, _ in holdings if end > earliest}):
        held = [(gpus, acc) for end, gpus, acc in holdings if end > t]
        total = (servers.gpus if servers is not None else 0) + sum(g for g, _ in held)
        if quota.gpus is not None and total + job.gpus > quota.gpus:
            continue
        cap = quota.accelerators.get(job.accelerator)
        if cap is not None:
            same = (servers.accelerators.get(job.accelerator, 0) if servers is not None else 0)
            same += sum(g for g, acc in held if acc == job.accelerator)
            if same + job.gpus > cap:
                continue
        return t
    raise AssertionError("_never said the quota holds it once every job has ended")
