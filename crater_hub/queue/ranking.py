"""The queued jobs ranked the way :func:`crater_hub.queue.engine.schedule` reads them, kept
between cycles.

Why: ranking 100,000 queued jobs — sorting them by (submitted, id) and grouping them per level
(priority, best-effort) and per owner — cost about half of the 100 ms an admission cycle may
take, and between two cycles only a few jobs come or go. The embedded backend keeps one
:class:`Ranking` and brings it up to date with :meth:`Ranking.sync` (a submit appends to its
owner's list; an admission or a cancel removes one entry), so a cycle starts from lists that are
already built. ``schedule`` still accepts a plain list of jobs (tests, the reference comparison):
it ranks them from scratch then.

The engine only reads a ranking; nothing in a cycle changes it. A change replaces the owner's
list instead of editing it (copy on write: a list is ~100 jobs), so a decision whose positions are
computed later, on its first read, still sees the lists of its own cycle.
"""

from bisect import bisect_left
from collections import defaultdict
from operator import attrgetter

_ID = attrgetter("id")
_SUBMITTED = attrgetter("submitted")


def _key(job):
    return (job.submitted, job.id)


class Ranking:
    """``levels``: (-priority, best_effort) -> owner -> [QueuedJob] in (submitted, id) order."""

    __slots__ = ("levels", "_by_id", "_ordered")

    def __init__(self, jobs=()):
        ordered = sorted(jobs, key=_ID)
        ordered.sort(key=_SUBMITTED)  # two stable sorts on plain keys: (submitted, id)
        levels = defaultdict(dict)
        for job in ordered:
            level = levels[-job.priority, job.best_effort]
            mine = level.get(job.owner)
            if mine is None:
                level[job.owner] = [job]
            else:
                mine.append(job)
        self.levels = levels
        self._ordered = ordered  # every job in (submitted, id) order; None once changed
        self._by_id = None  # id -> job, built on the first change

    def __len__(self):
        return len(self.by_id) if self._ordered is None else len(self._ordered)

    @property
    def by_id(self):
        if self._by_id is None:
            self._by_id = {job.id: job for job in self._ordered}
        return self._by_id

    @property
    def known_order(self):
        """Every queued job in (submitted, id) order when already known (built from scratch,
        unchanged since), else None; never edited in place."""
        return self._ordered


    def add(self, job):
        by_id = self.by_id
        if job.id in by_id:
            self.remove(job.id)
        by_id[job.id] = job
        self._ordered = None
        level = self.levels[-job.priority, job.best_effort]
        mine = level.get(job.owner)
        if mine is None:
            level[job.owner] = [job]
        elif _key(mine[-1]) < _key(job):
            level[job.owner] = [*mine, job]  # the usual case: submitted after the owner's others
        else:
            at = bisect_left(mine, _key(job), key=_key)
            level[job.owner] = [*mine[:at], job, *mine[at:]]

    def remove(self, job_id):
        job = self.by_id.pop(job_id, None)
        if job is None:
            return
        self._ordered = None
        level_key = (-job.priority, job.best_effort)
        level = self.levels[level_key]
        mine = level[job.owner]
        if len(mine) > 1:
            at = bisect_left(mine, _key(job), key=_key)
            level[job.owner] = [*mine[:at], *mine[at + 1:]]
        else:
            del level[job.owner]
            if not level:
                del self.levels[level_key]

    def sync(self, queued):
        """Make the ranking hold exactly ``queued`` ([QueuedJob]); a job of a known id whose
        object changed is ranked again. Costs one pass over the ids plus the changes; when more
        than a tenth of the jobs changed (a cycle that admitted thousands), ranking from scratch
        is cheaper than moving them one by one."""
        by_id = self.by_id
        now = {job.id: job for job in queued}
        gone = [i for i, job in by_id.items() if now.get(i) is not job]
        new = now.keys() - by_id.keys()
        if (len(gone) + len(new)) * 10 > len(now):
            fresh = Ranking(now.values())
            self.levels, self._ordered, self._by_id = fresh.levels, fresh._ordered, now
            return self
        for job_id in gone:
            self.remove(job_id)
        for job_id in now.keys() - by_id.keys():
            self.add(now[job_id])
        return self


def ordered(lists):
    """The jobs of ``lists`` (lists of jobs) in (submitted, id) order: the global rank the
    estimates use."""
    jobs = [job for mine in lists for job in mine]
    jobs.sort(key=_ID)
    jobs.sort(key=_SUBMITTED)
    return jobs
