"""The ranking the embedded backend keeps between cycles: after any sequence of submits,
admissions and cancels, a cycle over it decides exactly as a cycle over the same jobs ranked
from scratch (and so as the reference engine, which the engine tests compare against)."""

import random

from crater_hub.queue.engine import Ranking, schedule

from .test_queue_engine import _random_cycle

FIELDS = ("admit", "preempt", "positions", "estimated_start", "waiting")


def _same(a, b):
    return all(getattr(a, f) == getattr(b, f) for f in FIELDS)


def test_a_kept_ranking_decides_as_one_built_from_scratch_across_cycles():
    queued, active, nodes, quotas, servers = _random_cycle(11, jobs=1500, users=40, nodes=30)
    rng = random.Random(5)
    pool = list(queued)
    rng.shuffle(pool)
    current = pool[:1000]  # the rest arrive later
    later = pool[1000:]
    ranking = Ranking()  # as the backend starts: empty, then synced every cycle
    for strategy in ("best_effort_fifo", "strict_fifo", "best_effort_fifo", "strict_fifo"):
        ranking.sync(current)
        kept = schedule(ranking, active, nodes, quotas, servers, 100_000, 600, strategy)
        fresh = schedule(list(current), active, nodes, quotas, servers, 100_000, 600, strategy)
        assert kept.admit and _same(kept, fresh)
        # next cycle: the admitted and some cancelled jobs leave, new ones arrive
        gone = {job_id for job_id, _ in kept.admit} | {j.id for j in rng.sample(current, 50)}
        current = [j for j in current if j.id not in gone] + later[:50]
        later = later[50:]
    # cycles with few changes (moved one by one, not ranked again): still the same decisions
    ranking.sync(current)
    for strategy in ("best_effort_fifo", "strict_fifo") * 3:
        levels = ranking.levels
        ranking.sync(current)
        assert ranking.levels is levels and later
        for level in levels.values():  # each owner's list in (submitted, id) order
            for mine in level.values():
                assert mine == sorted(mine, key=lambda j: (j.submitted, j.id))
        kept = schedule(ranking, active, nodes, quotas, servers, 100_000, 600, strategy)
        fresh = schedule(list(current), active, nodes, quotas, servers, 100_000, 600, strategy)
        assert _same(kept, fresh)
        for key, level in levels.items():  # the quota flags kept in step with the lists
            for owner, mine in level.items():
                assert ranking.quota_flags(key, owner) == bytes(
                    1 if j.gpus and j.accelerator else 0 for j in mine)
        gone = {j.id for j in rng.sample(current, 10)}
        current = [j for j in current if j.id not in gone] + later[:20]
        later = later[20:]
    ranking.sync(current)
    held = [job for level in ranking.levels.values() for mine in level.values() for job in mine]
    assert sorted(j.id for j in held) == sorted(j.id for j in current)


def test_a_decision_read_after_the_ranking_changed_shows_its_own_cycle():
    queued, active, nodes, quotas, servers = _random_cycle(12, jobs=600, users=20, nodes=10)
    ranking = Ranking(queued)
    kept = schedule(ranking, active, nodes, quotas, servers, 100_000, 600)
    fresh = schedule(list(queued), active, nodes, quotas, servers, 100_000, 600)
    for job in queued[:300]:  # the next cycle's changes, before anyone read ``kept``
        ranking.remove(job.id)
    assert _same(kept, fresh)
