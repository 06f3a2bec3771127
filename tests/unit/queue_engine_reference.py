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

from crater_hub.policy.quotas import Usage, violation
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


def schedule(queued, active, nodes, quotas, server_usage, now, preempt_after=None):
    """One admission cycle.

    ``queued``: [QueuedJob]; ``active``: [ActiveJob] (admitted or running);
    ``nodes``: [NodeFree] (copied, not modified); ``quotas``: owner -> Quota or None (absent:
    unlimited); ``server_usage``: owner -> Usage of their running servers; ``now``: seconds;
    ``preempt_after``: seconds a guaranteed job waits before preempting (None: never).
    """
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
            if why:
                decision.waiting[job.id] = f"over quota: {why}"
                remaining.extend(jobs[index:])
                for later in jobs[index + 1:]:
                    decision.waiting[later.id] = f"behind job {job.id} of the same user (over quota)"
                continue
            need = (job.pool, job.gpus, job.cpu_m, job.mem_b)
            node = None
            if need not in no_fit:
                node = next((n for n in nodes if n.name not in reserved and _fits(n, job)), None)
                if node is None:
                    no_fit.add(need)
            if node is not None:
                _take(node, job)
                decision.admit.append((job.id, node.name))
                fair[owner] += job.gpus
                if not job.best_effort:
                    quota_use[owner] = _usage_add(quota_use[owner], job)
            else:
                remaining.append(job)
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
            if index + 1 < len(jobs):
                nxt = jobs[index + 1]
                heapq.heappush(heap, (fair[owner], nxt.submitted, nxt.id, owner, index + 1))

    _positions(remaining, fair, decision)
    _estimates(remaining, active, nodes, quotas, quota_use, now, decision)
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


def _estimates(remaining, active, nodes, quotas, quota_use, now, decision):
    """Estimated start per queued job: a replay of its pool in queue order, where running jobs
    end at start + declared (or maximum) run time, and the owner's own quota frees likewise.

    It ignores placement on nodes and later arrivals; a job no node can ever hold gets None.
    """
    free = defaultdict(int)
    for node in nodes:
        for slug, n in node.accelerators.items():
            free[slug] += n + node.terminating.get(slug, 0)
        free[CPU_POOL] += node.cpu_m
    releases = defaultdict(list)  # pool -> heap of (time, units)
    own = defaultdict(list)  # owner -> [(time, gpus)] of their guaranteed jobs
    for job in active:
        end = max(now, (job.started if job.started is not None else now) + job.runtime)
        releases[job.pool].append((end, job.units))
        if not job.best_effort and job.gpus:
            own[job.owner].append((end, job.gpus))
    for heap in releases.values():
        heapq.heapify(heap)
    for ends in own.values():
        ends.sort()
    order = sorted(remaining, key=lambda j: decision.positions[j.id])
    clock = defaultdict(lambda: now)
    by_pool = defaultdict(list)
    for job in order:
        by_pool[job.pool].append(job)
    capacity = defaultdict(int)  # the most a pool could hold at once, to spot impossible jobs
    for node in nodes:
        for slug in node.accelerators:
            capacity[slug] += node.accelerators[slug] + node.terminating.get(slug, 0)
    for a in active:
        capacity[a.pool] += a.units
    for pool, jobs in by_pool.items():
        heap = releases[pool]
        for job in sorted(jobs, key=lambda j: decision.positions[j.id]):
            if job.units > capacity[pool] + (free[pool] if pool == CPU_POOL else 0):
                decision.estimated_start[job.id] = None
                continue
            t = clock[pool]
            while free[pool] < job.units and heap:
                t, units = heapq.heappop(heap)
                free[pool] += units
            if free[pool] < job.units:
                decision.estimated_start[job.id] = None
                continue
            clock[pool] = t
            free[pool] -= job.units
            heapq.heappush(heap, (t + job.runtime, job.units))
            start = t
            quota = quotas.get(job.owner)
            if quota is not None and quota.gpus is not None and job.gpus and not job.best_effort:
                excess = quota_use[job.owner].gpus + job.gpus - quota.gpus
                for end, gpus in own.get(job.owner, ()):
                    if excess <= 0:
                        break
                    start = max(start, end)
                    excess -= gpus
                if excess > 0:
                    start = None
            decision.estimated_start[job.id] = start
