"""``lifetime: "idle"`` Ray clusters: deleted by the hub after ``Crater.ray_idle_timeout`` seconds
without use, or ``Crater.ray_max_lifetime`` seconds after their creation, whichever comes first;
the owner is warned ``Crater.ray_idle_warning`` seconds before.

KubeRay (1.7) has no idle timeout and zombie clusters holding GPUs are the known pain, so the hub
does it: one :class:`Reaper` per hub process (started with the hub by :mod:`.starter`) looks at the
``idle`` clusters of the shared watch cache every few seconds. "Used" means:

- a Ray job ``PENDING`` or ``RUNNING``: the reaper asks the head's Jobs API (``GET /api/jobs/``
  with the cluster's token, as the dashboard proxy does);
- a request through the hub's dashboard proxy (the proxy calls
  :meth:`~crater_hub.ray.clusters.RayClusters.touch`): the dashboard in a browser, the Jobs API
  from a notebook;
- a head that is not running yet (the cluster is starting, or queued): its time is not idle time.

A head whose Jobs API does not answer counts as idle (a broken cluster is not kept alive by its
breakage). The last use is kept in memory and written to the RayCluster's
``crater.io/last-activity`` annotation when it has moved on by :attr:`Reaper.persist_after`, and
when the hub stops, so a restarted hub continues the count instead of starting it over (no
database table). Until the hub's first look at a cluster older than the hub (seconds after a
restart) its idle warning is not shown (:func:`shown_warning`): a job may have run while the hub
was down, and the stored last use does not know it; a warning for the hard maximum, or for a
cluster made since the hub started, is shown at once.

:func:`decide` is the rule, pure; the REST model's ``idle_deadline``/``expires_at``/
``idle_warning`` come from it (:func:`lifetime_fields`), so what the owner is shown is what the
reaper will do.
"""

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from tornado.httpclient import AsyncHTTPClient

from . import manifests

log = logging.getLogger("crater_hub.ray")

IDLE = "idle"
#: the RayCluster annotation with the last use the hub saw (ISO 8601, UTC)
LAST_ACTIVITY = manifests.ANNOTATION + "last-activity"
BUSY_JOB_STATES = {"PENDING", "RUNNING"}
JOBS_TIMEOUT = 5.0
FLUSH_TIMEOUT = 5.0

KEEP, WARN, DELETE = "keep", "warn", "delete"


@dataclass(frozen=True)
class Verdict:
    action: str  # KEEP, WARN (within the warning time of expires_at) or DELETE
    idle_deadline: float  # epoch seconds: when idleness alone deletes it
    expires_at: float  # epoch seconds: the earlier of idle_deadline and the hard maximum
    reason: str  # "idle" or "max_lifetime": which of the two expires_at is


def decide(now, created, last_activity, busy, idle_timeout, max_lifetime, warning):
    """What to do with an ``idle``-lifetime cluster now (all times epoch seconds).

    ``last_activity``: the last use seen (None: never; the creation counts as one); ``busy``:
    in use right now (running jobs, head still starting); ``max_lifetime`` 0: no hard maximum;
    ``warning``: seconds before the deletion from which to warn (at most ``idle_timeout``).
    """
    last = max(created, last_activity if last_activity is not None else created)
    if busy:
        last = max(last, now)
    idle_deadline = last + idle_timeout
    hard = created + max_lifetime if max_lifetime else math.inf
    expires_at, reason = (idle_deadline, IDLE) if idle_deadline < hard else (hard, "max_lifetime")
    if now >= expires_at:
        action = DELETE
    elif now >= expires_at - min(warning, idle_timeout):
        action = WARN
    else:
        action = KEEP
    return Verdict(action, idle_deadline, expires_at, reason)


def shown_warning(verdict, looked):
    """Whether the owner is warned now: the verdict warns (or deletes), and if for idleness, the
    hub has looked at the cluster's jobs since it started (``looked``): before that it does not
    know whether a job ran while it was down, which would move the deadline."""
    return verdict.action != KEEP and (looked or verdict.reason != IDLE)


def epoch(timestamp):
    """An ISO 8601 timestamp (as Kubernetes writes them) → epoch seconds; None if absent/bad."""
    if not timestamp:
        return None
    try:
        parsed = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def iso(seconds):
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def lifetime_of(rc):
    return ((rc.get("metadata") or {}).get("annotations") or {}).get(manifests.ANNOTATION + "lifetime")


def verdict_for(crater, service, rc, now=None, busy=False):
    """:func:`decide` for ``rc`` with the hub's config and the last use ``service`` knows."""
    now = time.time() if now is None else now
    created = epoch(rc["metadata"].get("creationTimestamp")) or now
    return decide(now, created, service.last_activity(rc), busy, crater.ray_idle_timeout,
                  crater.ray_max_lifetime, crater.ray_idle_warning)


def lifetime_fields(crater, service, rc, now=None):
    """What the REST model says of an idle deletion: ``idle_deadline`` and ``expires_at`` (ISO,
    None for other lifetimes) and ``idle_warning`` (true from ``ray_idle_warning`` before)."""
    if lifetime_of(rc) != IDLE:
        return {"idle_deadline": None, "expires_at": None, "idle_warning": False,
                "expires_because": None}
    verdict = verdict_for(crater, service, rc, now, busy=service.starting(rc))
    return {"idle_deadline": iso(verdict.idle_deadline), "expires_at": iso(verdict.expires_at),
            "idle_warning": shown_warning(verdict, service.looked_at(rc)),
            "expires_because": verdict.reason}


class Reaper:
    """The hub's one loop deleting expired ``idle`` clusters of one :class:`RayClusters`."""

    def __init__(self, crater, service):
        self.crater = crater
        self.service = service
        timeout = crater.ray_idle_timeout
        #: seconds between two looks: a tenth of the idle time, 1 to 30 s
        self.interval = max(1.0, min(30.0, timeout / 10))
        #: how far the last use must have moved on before it is written to the RayCluster
        self.persist_after = max(self.interval, min(60.0, timeout / 4))
        self._task = None

    def start(self):
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="crater-ray-reaper")
        return self

    async def stop(self):
        """Stop the loop, then write the last uses seen since the last sweep to the clusters (at
        most :data:`FLUSH_TIMEOUT` seconds), so the next hub continues from them."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        try:
            await asyncio.wait_for(self._flush(), FLUSH_TIMEOUT)
        except Exception as e:  # the hub is stopping: say it, do not hold it up
            log.warning("Ray idle clusters: the last uses were not all stored at stop: %r", e)

    async def _flush(self):
        for rc in self.service.of():
            if lifetime_of(rc) == IDLE and not rc["metadata"].get("deletionTimestamp"):
                await self._persist(rc, after=0)

    async def _run(self):
        # No timeout: without KubeRay's CRD the cache backs off and retries; nothing waits on us.
        await self.service.cache.ready()
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("Ray idle clusters: a sweep failed")
            await asyncio.sleep(self.interval)

    async def sweep(self, now=None):
        """Look at every ``idle`` cluster once; delete the expired ones. Returns their names."""
        clusters = [rc for rc in self.service.of()
                    if lifetime_of(rc) == IDLE and not rc["metadata"].get("deletionTimestamp")]
        busy = await asyncio.gather(*(self.busy(rc) for rc in clusters), return_exceptions=True)
        deleted = []
        for rc, in_use in zip(clusters, busy, strict=True):
            name = rc["metadata"]["name"]
            self.service.looked.add(name)
            if isinstance(in_use, Exception):  # the head does not answer: idle, as said above
                log.warning("Ray cluster %s: its Jobs API did not answer (%s): counted as idle",
                            name, in_use)
                in_use = False
            at = time.time() if now is None else now
            if in_use:
                self.service.touch(name, at)
            verdict = verdict_for(self.crater, self.service, rc, at)
            if verdict.action == DELETE:
                log.info("Ray cluster %s of %s: deleting it (%s since %s)", name,
                         manifests.owner_of(rc), "idle" if verdict.reason == IDLE else
                         "its maximum lifetime passed", iso(verdict.expires_at))
                await self.service.delete(name)
                deleted.append(name)
            else:
                await self._persist(rc)
        return deleted

    async def busy(self, rc):
        """Whether ``rc`` is in use now: a job pending or running, or its head not running yet."""
        if self.service.starting(rc):
            return True
        head = ((rc.get("status") or {}).get("head") or {}).get("podIP")
        token = await self.service.token(rc)
        if token is None:  # KubeRay makes the Secret with the head: still starting
            return True
        url = f"http://{head}:{manifests.DASHBOARD_PORT}/api/jobs/"
        response = await AsyncHTTPClient().fetch(
            url, headers={"Authorization": f"Bearer {token}"}, raise_error=False,
            request_timeout=JOBS_TIMEOUT)
        if response.code != 200:
            log.warning("Ray cluster %s: its Jobs API answered %s (%s): counted as idle",
                        rc["metadata"]["name"], response.code, response.error)
            return False
        try:
            jobs = json.loads(response.body)
        except ValueError:
            return False
        return any(isinstance(j, dict) and j.get("status") in BUSY_JOB_STATES for j in jobs)

    async def _persist(self, rc, after=None):
        """Write the last use to the RayCluster when it moved on by :attr:`persist_after`."""
        after = self.persist_after if after is None else after
        seen = self.service.activity.get(rc["metadata"]["name"])
        stored = epoch((rc["metadata"].get("annotations") or {}).get(LAST_ACTIVITY))
        if seen is not None and (stored is None or seen - stored >= max(after, 1)):
            await self.service.annotate(rc["metadata"]["name"], {LAST_ACTIVITY: iso(seen)})
