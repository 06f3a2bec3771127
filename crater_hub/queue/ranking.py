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

    __slots__ = ("levels", "_by_id", "_ordered", "_flags")

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
        self._flags = {}  # (level, owner) -> (their list, its quota_flags), made when first asked

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


    def quota_flags(self, level_key, owner):
        """One byte per job of ``levels[level_key][owner]``: 1 where the GPU quota counts the job
        (devices of an accelerator), else 0.

        Why: an owner whose quota is full has all such jobs refused, and the cycle skips to their
        next other job with ``bytes.find`` instead of looking at each job (~70,000 of them per
        cycle at 100,000 queued). Made on first request, then kept in step by :meth:`add` and
        :meth:`remove`, so a cycle pays only for the lists that changed since it was made."""
        jobs = self.levels[level_key][owner]
        kept = self._flags.get((level_key, owner))
        if kept is not None and kept[0] is jobs:
            return kept[1]
        flags = bytes([1 if job.gpus and job.accelerator else 0 for job in jobs])
        self._flags[level_key, owner] = (jobs, flags)
        return flags

    def _reflag(self, level_key, owner, old, at, job=None):
        """Bring a kept quota_flags up to date: the owner's list ``old`` became the current one
        by inserting ``job`` at ``at`` (or, without ``job``, removing the job at ``at``)."""
        kept = self._flags.pop((level_key, owner), None)
        mine = self.levels[level_key].get(owner)
        if kept is None or kept[0] is not old or mine is None:
            return
        flags = kept[1]
        if job is None:
            flags = flags[:at] + flags[at + 1:]
        else:
            flags = flags[:at] + (b"\1" if job.gpus and job.accelerator else b"\0") + flags[at:]
        self._flags[level_key, owner] = (mine, flags)

    def add(self, job):
        by_id = self.by_id
        if job.id in by_id:
            self.remove(job.id)
        by_id[job.id] = job
        self._ordered = None
        level_key = (-job.priority, job.best_effort)
        level = self.levels[level_key]
        mine = level.get(job.owner)
        if mine is None:
            level[job.owner] = [job]
            return
        if _key(mine[-1]) < _key(job):
            at = len(mine)
            level[job.owner] = [*mine, job]  # the usual case: submitted after the owner's others
        else:
            at = bisect_left(mine, _key(job), key=_key)
            level[job.owner] = [*mine[:at], job, *mine[at:]]
        self._reflag(level_key, job.owner, mine, at, job)

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
            self._reflag(level_key, job.owner, mine, at)
        else:
            del level[job.owner]
            self._flags.pop((level_key, job.owner), None)
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
            self._flags = {}
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
