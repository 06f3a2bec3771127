"""The embedded admission engine as data: priority, fair share, FIFO, quota, capacity,
best-effort preemption, positions and estimated start."""

import random
import time

import pytest

from crater_hub.policy.quotas import Quota, Usage
from crater_hub.queue.engine import ActiveJob, NodeFree, QueuedJob, schedule

from .queue_engine_reference import schedule as reference_schedule

A100 = "a100"


def node(name="n1", gpus=4, cpu_m=64000, mem_b=2**40, terminating=None):
    return NodeFree(name, {A100: gpus}, cpu_m, mem_b, dict(terminating or {}))


def q(id, owner="u", gpus=1, priority=0, submitted=None, best_effort=False, runtime=3600,
      accelerator=A100):
    return QueuedJob(id=id, owner=owner, priority=priority, best_effort=best_effort,
                     accelerator=accelerator, gpus=gpus, cpu_m=100, mem_b=1000,
                     submitted=float(id if submitted is None else submitted), runtime=runtime)


def a(id, owner="u", gpus=1, best_effort=False, node="n1", started=0.0, runtime=3600):
    return ActiveJob(id=id, owner=owner, accelerator=A100, gpus=gpus, best_effort=best_effort,
                     node=node, started=started, runtime=runtime, cpu_m=100, mem_b=1000)


def admitted(decision):
    return [job_id for job_id, _ in decision.admit]


def test_admits_in_fifo_order_while_capacity_lasts():
    d = schedule([q(2), q(1), q(3)], [], [node(gpus=2)], {}, {}, now=100)
    assert admitted(d) == [1, 2]
    assert d.positions == {3: 1} and d.waiting[3] == "waiting for capacity"


def test_higher_priority_first_regardless_of_submit_time():
    d = schedule([q(1, "a"), q(2, "b", priority=10)], [], [node(gpus=1)], {}, {}, now=100)
    assert admitted(d) == [2] and d.positions == {1: 1}


def test_fair_share_prefers_the_user_using_fewer_gpus():
    active = [a(10, "heavy"), a(11, "heavy")]
    d = schedule([q(1, "heavy"), q(2, "light")], active, [node(gpus=1)], {}, {}, now=100)
    assert admitted(d) == [2]


def test_fair_share_counts_servers_too_and_is_reevaluated_after_each_admission():
    queued = [q(1, "x"), q(2, "x"), q(3, "y"), q(4, "y")]
    d = schedule(queued, [], [node(gpus=3)], {}, {"y": Usage(1, 1, {A100: 1})}, now=100)
    # x (0 GPUs) first, then x and y tie at 1 GPU and FIFO decides (x's job 2 came first)
    assert admitted(d) == [1, 2, 3]


def test_quota_counts_servers_and_jobs_together():
    quota = {"u": Quota(gpus=2)}
    servers = {"u": Usage(1, 1, {A100: 1})}
    d = schedule([q(1), q(2)], [], [node()], quota, servers, now=100)
    assert admitted(d) == [1]
    assert d.positions == {2: 1} and d.waiting[2].startswith("over quota")


def test_quota_blocks_only_its_owner():
    quota = {"u": Quota(gpus=1)}
    d = schedule([q(1), q(2), q(3, "v")], [a(9)], [node()], quota, {}, now=100)
    assert admitted(d) == [3]
    assert d.positions == {1: 1, 2: 2}


def test_best_effort_exceeds_quota_on_idle_capacity():
    quota = {"u": Quota(gpus=1)}
    d = schedule([q(i, best_effort=True) for i in range(1, 5)], [], [node()], quota, {}, now=100)
    assert admitted(d) == [1, 2, 3, 4]


def test_best_effort_goes_after_guaranteed_at_equal_priority():
    d = schedule([q(1, best_effort=True), q(2, "v")], [], [node(gpus=1)], {}, {}, now=100)
    assert admitted(d) == [2]


def test_a_job_too_big_now_does_not_block_smaller_ones():
    d = schedule([q(1, gpus=4), q(2, "v", gpus=1)], [a(9)], [node()], {}, {}, now=100)
    assert admitted(d) == [2] and d.positions == {1: 1}


def test_node_placement_is_per_node_not_cluster_total():
    d = schedule([q(1, gpus=2)], [], [node("n1", gpus=1), node("n2", gpus=1)], {}, {}, now=100)
    assert admitted(d) == []


def test_guaranteed_job_waiting_past_threshold_preempts_fewest_best_effort_on_one_node():
    active = [a(10, "s", best_effort=True, node="n1", started=1),
              a(11, "s", best_effort=True, node="n1", started=2),
              a(12, "s", best_effort=True, node="n2", started=3),
              a(13, "s", gpus=2, best_effort=True, node="n2", started=4)]
    nodes = [node("n1", gpus=0), node("n2", gpus=0)]
    early = schedule([q(1, "g", gpus=2, submitted=95)], active, nodes, {}, {}, now=100,
                     preempt_after=10)
    assert early.preempt == [] and early.admit == []
    late = schedule([q(1, "g", gpus=2, submitted=80)], active, nodes, {}, {}, now=100,
                    preempt_after=10)
    # n2 frees 2 GPUs by evicting one job (13); n1 would need two
    assert late.preempt == [(13, 1)]
    assert late.waiting[1] == "preempting best-effort jobs on n2"


def test_no_new_victims_while_preempted_pods_are_leaving():
    active = [a(10, "s", best_effort=True)]
    nodes = [node(gpus=0, terminating={A100: 2})]
    d = schedule([q(1, "g", gpus=2, submitted=0)], active, nodes, {}, {}, now=100, preempt_after=10)
    assert d.preempt == [] and "waiting for preempted jobs" in d.waiting[1]


def test_guaranteed_jobs_are_never_preempted():
    d = schedule([q(1, "g", gpus=1, submitted=0)], [a(10, "s")], [node(gpus=0)], {}, {}, now=100,
                 preempt_after=10)
    assert d.preempt == []


def test_positions_are_per_pool():
    d = schedule([q(1, gpus=8), q(2, gpus=8, accelerator="t4"), q(3, gpus=8)], [],
                 [node()], {}, {}, now=100)
    assert d.positions == {1: 1, 2: 1, 3: 2}


def test_estimated_start_from_running_jobs_run_times():
    active = [a(10, "x", gpus=2, started=0, runtime=1000), a(11, "x", gpus=2, started=0, runtime=500)]
    d = schedule([q(1, gpus=2, runtime=300), q(2, gpus=4, runtime=100)], active, [node(gpus=0)],
                 {}, {}, now=100)
    assert d.estimated_start[1] == 500  # when job 11 ends
    assert d.estimated_start[2] == 1000  # job 10 ends at 1000; job 1's 2 GPUs back at 800


def test_estimated_start_waits_for_own_quota():
    active = [a(10, "u", gpus=2, started=0, runtime=900)]
    d = schedule([q(1, "u", gpus=1)], active, [node(gpus=2)], {"u": Quota(gpus=2)}, {}, now=100)
    assert d.estimated_start[1] == 900


def test_impossible_job_has_no_estimate():
    d = schedule([q(1, gpus=16)], [], [node()], {}, {}, now=100)
    assert d.positions == {1: 1} and d.estimated_start[1] is None


def test_best_effort_fifo_starts_a_later_job_that_fits_the_quota_before_one_that_does_not():
    # u holds 2 of 3 GPUs: job 1 (2 GPUs) must wait for the quota, job 2 (1 GPU) fits
    quota = {"u": Quota(gpus=3)}
    d = schedule([q(1, gpus=2), q(2, gpus=1)], [a(9, gpus=2)], [node()], quota, {}, now=100)
    assert admitted(d) == [2]
    assert d.waiting[1].startswith("over quota: 2 more GPUs would exceed your GPU quota")


def test_strict_fifo_starts_an_owners_jobs_in_submission_order():
    quota = {"u": Quota(gpus=3)}
    args = ([q(1, gpus=2), q(2, gpus=1), q(3, "v", gpus=1)], [a(9, gpus=2)], [node()], quota, {})
    d = schedule(*args, now=100, strategy="strict_fifo")
    assert admitted(d) == [3]  # another owner is not held back
    assert d.waiting[2] == "behind job 1 of the same user (over quota)"
    assert d.estimated_start[2] >= d.estimated_start[1]


def test_strict_fifo_holds_back_behind_a_job_waiting_for_capacity_too():
    args = ([q(1, gpus=4), q(2, gpus=1), q(3, "v", gpus=1)], [a(9)], [node()], {}, {})
    assert sorted(admitted(schedule(*args, now=100))) == [2, 3]
    d = schedule(*args, now=100, strategy="strict_fifo")
    assert admitted(d) == [3]
    assert d.waiting[2] == "behind job 1 of the same user (waiting for capacity)"
    # a job with no estimate holds back the owner's later ones' estimates too
    d = schedule([q(1, gpus=8), q(2, gpus=1)], [a(9, gpus=4)], [node(gpus=0)], {}, {}, now=100,
                 strategy="strict_fifo")
    assert d.estimated_start == {1: None, 2: None}
    assert d.waiting[2].endswith("no estimated start: it is behind job 1 of the same user, "
                                 "which has none")


def test_only_the_owner_and_its_priority_class_are_held_back_under_strict_fifo():
    quota = {"u": Quota(gpus=1)}
    d = schedule([q(1, gpus=2, priority=10), q(2, gpus=1), q(3, accelerator=None, gpus=0)], [],
                 [node()], quota, {}, now=100, strategy="strict_fifo")
    # job 1 waits for the quota at priority 10; jobs 2 and 3, at priority 0, are not behind it
    assert admitted(d) == [2, 3] and d.waiting[1].startswith("over quota")


def test_jobs_the_quota_cannot_hold_together_never_share_an_estimate():
    quota = {"u": Quota(gpus=2)}
    active = [a(9, gpus=2, started=0, runtime=1000)]
    d = schedule([q(1, gpus=2, runtime=500), q(2, gpus=2, runtime=500), q(3, gpus=1)], active,
                 [node(gpus=2)], quota, {}, now=100)
    assert d.estimated_start[1] == 1000  # when job 9 gives its 2 GPUs back
    assert d.estimated_start[2] == 1500  # when job 1 will
    assert d.estimated_start[3] == 2000  # its GPU is free earlier, its owner's quota is not


def test_estimates_respect_a_per_accelerator_quota_too():
    quota = {"u": Quota(gpus=8, accelerators={A100: 1})}
    active = [a(9, gpus=1, started=0, runtime=1000)]
    d = schedule([q(1), q(2)], active, [node(gpus=3)], quota, {}, now=100)
    assert d.waiting[1].startswith("over quota: 1 more a100 would exceed your quota for them")
    assert d.estimated_start[1] == 1000  # job 9 gives the one A100 back
    assert d.estimated_start[2] == 4600  # then job 1 holds it for its hour


def test_a_limit_that_cannot_bind_holds_no_estimate_back():
    # the A100 cap (1) binds, the total (8) cannot: the T4 job is estimated on its own
    quota = {"u": Quota(gpus=8, accelerators={A100: 1})}
    t4_node = NodeFree("t", {"t4": 0}, 64000, 2**40)
    t4_busy = ActiveJob(id=8, owner="v", accelerator="t4", gpus=1, node="t", started=0,
                        runtime=300, cpu_m=100, mem_b=1000)
    queued = [q(1), q(2), q(3, accelerator="t4")]
    active = [a(9, gpus=1, started=0, runtime=1000), t4_busy]
    d = schedule(queued, active, [node(gpus=3), t4_node], quota, {}, now=100)
    assert (d.estimated_start[1], d.estimated_start[2], d.estimated_start[3]) == (1000, 4600, 300)
    # a total of 3 (use 1 + demand 3 > 3) binds: the owner's GPU jobs then start in queue order
    quota = {"u": Quota(gpus=3, accelerators={A100: 1})}
    d = schedule(queued, active, [node(gpus=3), t4_node], quota, {}, now=100)
    assert (d.estimated_start[1], d.estimated_start[2], d.estimated_start[3]) == (1000, 4600, 4600)


def test_jobs_admitted_in_this_cycle_count_in_the_estimates():
    quota = {"u": Quota(gpus=2)}
    d = schedule([q(1, gpus=2, runtime=600), q(2, gpus=2)], [], [node()], quota, {}, now=100)
    assert admitted(d) == [1] and d.estimated_start[2] == 700


def test_a_job_without_an_estimate_says_why():
    d = schedule([q(1, gpus=8), q(2, gpus=1, accelerator="t4")], [],
                 [node("n1"), node("n2")], {}, {}, now=100)
    assert d.estimated_start == {1: None, 2: None}
    assert d.waiting[1] == ("waiting for capacity; no estimated start: no node has 8 a100 GPUs, "
                            "even after the running jobs end (at most 4)")
    assert d.waiting[2].endswith("no estimated start: no node has t4 GPUs")
    servers = {"u": Usage(1, 1, {A100: 1})}
    d = schedule([q(3, gpus=2)], [], [node()], {"u": Quota(gpus=2)}, servers, now=100)
    assert d.estimated_start[3] is None
    assert d.waiting[3].endswith("no estimated start: the user's servers hold 1 of their "
                                 "quota's 2 GPUs")


def test_an_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="strict_fifo"):
        schedule([], [], [], {}, {}, now=0, strategy="fifo")


def test_one_cycle_over_100k_queued_jobs_of_1000_users():
    queued = [q(i, f"user{i % 1000}", gpus=1 + i % 2, priority=(i % 3) * 10)
              for i in range(100_000)]
    active = [a(200_000 + i, f"user{i}", node=f"n{i % 100}") for i in range(400)]
    nodes = [node(f"n{i}", gpus=0) for i in range(100)]
    began = time.perf_counter()
    d = schedule(queued, active, nodes, {f"user{i}": Quota(gpus=4) for i in range(1000)}, {},
                 now=1e6, preempt_after=600)
    seconds = time.perf_counter() - began
    assert len(d.positions) == 100_000 and not d.admit
    print(f"one scheduling cycle, 100,000 queued jobs of 1,000 users: {seconds * 1000:.0f} ms")


def _random_cycle(seed, jobs=3000, users=60, nodes=40):
    """A random cycle that exercises every rule: priorities and best-effort, quotas (total, per
    accelerator, none, admins'), servers' usage, CPU-only jobs and GPU jobs without an
    accelerator, equal submit times, nodes that are full, partly free or being freed, and
    best-effort jobs to preempt."""
    rng = random.Random(seed)
    slugs = [A100, "t4", "h100"]
    free_nodes, active, next_id = [], [], 100_000
    for i in range(nodes):
        slug = slugs[i % 4] if i % 4 < 3 else None
        cap = rng.choice((2, 4, 8)) if slug else 0
        free = {slug: cap} if slug else {}
        cpu, mem = rng.choice((8000, 32000, 64000)), rng.choice((16, 64, 256)) * 2**30
        name = f"n{i:03d}"
        while slug and free[slug] > 0 and rng.random() < 0.8:
            gpus = min(free[slug], rng.choice((1, 1, 2, 4)))
            free[slug] -= gpus
            next_id += 1
            best_effort = rng.random() < 0.4
            active.append(ActiveJob(
                id=next_id, owner=f"u{rng.randrange(users)}", priority=0 if best_effort else 50,
                best_effort=best_effort, accelerator=slug, gpus=gpus, cpu_m=1000, mem_b=2**30,
                submitted=0.0, runtime=rng.choice((600, 3600)),
                node=name if rng.random() < 0.95 else None,
                started=rng.choice((None, 50.0, 400.0, 900.0))))
        terminating = {slug: rng.choice((1, 2, 4))} if slug and rng.random() < 0.3 else {}
        free_nodes.append(NodeFree(name, free, cpu - rng.randrange(0, cpu, 500),
                                   mem - rng.randrange(0, mem, 2**28), terminating))
    active.append(ActiveJob(id=99_999, owner="u1", best_effort=True, accelerator=A100, gpus=1,
                            node="gone", started=10.0))  # on a node that is not Ready
    queued = []
    for i in range(jobs):
        kind = rng.random()
        accelerator, gpus = rng.choice(slugs + ["nope"]), rng.choice((1, 1, 2, 4, 8))
        if kind < 0.15:
            accelerator, gpus = None, 0
        elif kind < 0.18:
            accelerator = None  # GPUs asked without an accelerator: a CPU-pool job
        elif kind < 0.2:
            gpus = 0
        best_effort = rng.random() < 0.2
        queued.append(QueuedJob(
            id=rng.randrange(10**9) * 1000 + i, owner=f"u{rng.randrange(users)}",
            priority=0 if best_effort else rng.choice((10, 50, 50, 100)), best_effort=best_effort,
            accelerator=accelerator, gpus=gpus, cpu_m=rng.choice((100, 500, 2000, 16000)),
            mem_b=rng.choice((1, 4, 32)) * 2**28, submitted=float(rng.randrange(0, 1000, 10)),
            runtime=rng.choice((0, 60, 600, 3600, 7200))))
    rng.shuffle(queued)
    quotas, servers = {}, {}
    for u in range(users):
        name = f"u{u}"
        pick = u % 5
        if pick == 0:
            continue  # absent: unlimited
        quotas[name] = [None, Quota(servers=2, gpus=4), Quota(gpus=8, accelerators={A100: 2}),
                        Quota(accelerators={"t4": 3})][pick - 1]
        if u % 3 == 0:
            servers[name] = Usage(1, 1, {"t4": 1})
    return queued, active, free_nodes, quotas, servers


def _same(fast, slow):
    for name in ("admit", "preempt", "positions", "estimated_start", "waiting"):
        assert getattr(fast, name) == getattr(slow, name), name


STRATEGIES = ("best_effort_fifo", "strict_fifo")


def test_fast_schedule_decides_as_the_reference_on_random_cycles():
    for seed in range(6):
        queued, active, free_nodes, quotas, servers = _random_cycle(seed)
        for now, preempt_after in ((1000.0, None), (1000.0, 300), (1500.0, 0)):
            for strategy in STRATEGIES:
                args = (queued, active, free_nodes, quotas, servers, now, preempt_after, strategy)
                fast, slow = schedule(*args), reference_schedule(*args)
                assert slow.admit and slow.positions  # the cycle decides something
                _same(fast, slow)


def test_fast_schedule_decides_as_the_reference_when_capacity_is_plenty_and_when_none():
    queued, active, free_nodes, quotas, servers = _random_cycle(7, jobs=2000, nodes=12)
    roomy = [NodeFree(n.name, {s: 64 for s in n.accelerators}, 10**6, 2**50) for n in free_nodes]
    full = [NodeFree(n.name, {s: 0 for s in n.accelerators}, 0, 0) for n in free_nodes]
    for nodes in (roomy, full, []):
        for strategy in STRATEGIES:
            args = (queued, active, nodes, quotas, servers, 2000.0, 100, strategy)
            _same(schedule(*args), reference_schedule(*args))


def test_fast_schedule_decides_as_the_reference_across_many_node_blocks():
    """More nodes than one first-fit block (64): block skipping, bounds and resuming in a later
    block are compared too."""
    for seed in (11, 12):
        queued, active, free_nodes, quotas, servers = _random_cycle(seed, jobs=3000, nodes=300)
        for (now, preempt_after), strategy in zip(((1000.0, None), (1500.0, 0)), STRATEGIES,
                                                  strict=True):
            args = (queued, active, free_nodes, quotas, servers, now, preempt_after, strategy)
            fast, slow = schedule(*args), reference_schedule(*args)
            assert slow.admit and slow.positions
            _same(fast, slow)


def test_the_strategy_is_a_validated_setting():
    from traitlets import TraitError

    from crater_hub.config import JOB_QUEUEING_STRATEGIES, Crater
    from crater_hub.queue.engine import STRATEGIES

    assert JOB_QUEUEING_STRATEGIES == STRATEGIES  # config.py sits below the queue: two copies
    assert Crater().job_queueing_strategy == "best_effort_fifo"
    assert Crater(job_queueing_strategy="strict_fifo").job_queueing_strategy == "strict_fifo"
    with pytest.raises(TraitError, match="job_queueing_strategy must be one of best_effort_fifo, "
                                         "strict_fifo, got 'FIFO'"):
        Crater(job_queueing_strategy="FIFO")
