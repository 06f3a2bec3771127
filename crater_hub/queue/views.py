"""What the API shows of the queue: a job's model, the admins' queue view, and a job's timeline
(its transitions with the Kubernetes events of its Jobs and pods).

Events come from :class:`EventIndex`, kept from the shared events cache by a listener: a job's
events are looked up by its Jobs' names, not found by scanning every event of the namespace.
"""

from collections import defaultdict
from datetime import datetime, timezone

from ..db.models import isotime
from ..kube.caches import object_key
from . import manifest, timeline

POD_SUFFIX = 6  # a Job's pods are named <job>-<5 characters>
PREFIX = manifest.job_name(0)[:-1]  # "crater-job-"


def model(job, decision, transitions=None):
    """The API's view of a record; ``decision``: the last cycle's positions, estimates and
    reasons; ``transitions``: its history as the API shows it, when ``job`` is a detached record
    whose history was not loaded (``False``: leave the history out)."""
    position = eta = None
    if job.state == "queued":
        position = decision.positions.get(job.id)
        when = decision.estimated_start.get(job.id)
        if when is not None:
            eta = isotime(datetime.fromtimestamp(when, timezone.utc).replace(tzinfo=None))
    out = {
        "id": job.id, "owner": job.owner, "name": job.name, "profile": job.profile,
        "accelerator": job.accelerator, "gpus": job.gpus, "cpu": job.cpu, "memory": job.memory,
        "cpu_limit": job.cpu_limit, "memory_limit": job.memory_limit, "image": job.image,
        "command": list(job.command), "env": dict(job.env), "priority": job.priority,
        "queue": job.queue, "state": job.state, "reason": job.reason,
        "waiting": decision.waiting.get(job.id) if job.state == "queued" else None,
        "exit_code": job.exit_code, "position": position, "estimated_start": eta,
        "max_runtime": job.max_runtime, "attempt": job.attempt,
        "submitted": isotime(job.submitted), "admitted": isotime(job.admitted),
        "started": isotime(job.started), "finished": isotime(job.finished),
        "k8s_job": job.k8s_job, "node": job.node,
        "datasets": [m["ref"] for m in (job.shape or {}).get("datasets") or ()],
    }
    if transitions is not False:
        out["transitions"] = transitions if transitions is not None else [
            {"state": t.state, "reason": t.reason, "at": isotime(t.at)} for t in job.transitions]
    return out


def queues(models, backend):
    """The admins' view: jobs grouped by queue."""
    by_queue = defaultdict(list)
    for m in models:
        by_queue[m["queue"]].append(m)
    return {"queues": [{"name": name, "backend": backend, "jobs": jobs}
                       for name, jobs in sorted(by_queue.items())]}


def _job_of(obj):
    """The Job name an event's involved object belongs to (a Job, or a pod of one), else None."""
    name = obj.get("name") or ""
    if not name.startswith(PREFIX):
        return None
    if obj.get("kind") == "Pod":
        return name[:-POD_SUFFIX] if len(name) > POD_SUFFIX and name[-POD_SUFFIX] == "-" else None
    return name


class EventIndex:
    """Job name -> {event key: event}, kept from an events :class:`WatchCache` by its listener."""

    def __init__(self, cache):
        self.cache = cache
        self.by_job = defaultdict(dict)
        for event in cache.objects.values():
            self._on_event("ADDED", event, None)
        cache.add_listener(self._on_event)

    def close(self):
        self.cache.remove_listener(self._on_event)

    def _on_event(self, event_type, event, old):
        job = _job_of(event.get("involvedObject") or {})
        if job is None:
            return
        key = object_key(event)
        if event_type == "DELETED":
            events = self.by_job.get(job)
            if events is not None:
                events.pop(key, None)
                if not events:
                    del self.by_job[job]
        else:
            self.by_job[job][key] = event

    def of(self, names):
        for name in names:
            yield from self.by_job.get(name, {}).values()


def events(index, job_id, model_):
    """Transitions and the Kubernetes events of the job's Jobs and pods, oldest first."""
    out = [{"type": "Normal" if t["state"] not in ("failed", "preempted") else "Warning",
            "reason": t["state"], "message": t["reason"], "at": t["at"],
            "object": f"crater-job/{job_id}"} for t in model_["transitions"]]
    keyed = [(timeline.transition_key(e), e) for e in out]
    names = [manifest.job_name(job_id, a) for a in range(model_["attempt"] + 1)]
    for ev in index.of(names):
        obj = ev.get("involvedObject") or {}
        at = ev.get("lastTimestamp") or ev.get("eventTime") or \
            (ev.get("metadata") or {}).get("creationTimestamp")
        keyed.append((timeline.kube_event_key(at, ev), {
            "type": ev.get("type") or "Normal", "reason": ev.get("reason"),
            "message": ev.get("message"), "at": at,
            "object": f"{(obj.get('kind') or '').lower()}/{obj.get('name') or ''}"}))
    return timeline.ordered(keyed)
