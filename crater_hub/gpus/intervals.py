"""When a pod's hold on devices began and ended, read from the pod alone (pure functions, no I/O).

Accounting (:mod:`.accounting`) turns pod events into allocation intervals; the times come from
what the kubelet wrote on the pod, never from when the hub happened to see an event, so a hub that
was slow, restarting or down still records the real times:

- **start**: the earliest ``startedAt`` of the pod's containers (running or terminated; the
  kubelet's placeholder ``1970-01-01`` of a container that never ran is ignored), else the
  ``PodScheduled`` condition's time (bound, devices assigned, container not started yet);
- **end**: once the pod has ended (phase Succeeded or Failed, or deleted), the latest
  ``finishedAt`` of its containers; None while it still runs.

A pod counts only when it is bound to a node (``spec.nodeName``) and holds device resources.
"""

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from ..db.models import from_isotime

TERMINAL = ("Succeeded", "Failed")
#: times before this are the kubelet's "never" (it writes 1970-01-01 for a container that did not run)
EPOCH_GUARD = datetime(1971, 1, 1)


@dataclass(frozen=True)
class Hold:
    """What one pod holds and when, as its last known state says."""

    uid: str
    namespace: str
    name: str
    node: str
    devices: dict  # {resource: units}
    start: datetime | None  # None: bound but no time on the pod yet
    #: the start is a container's startedAt (else PodScheduled, replaced once a container starts)
    firm: bool
    ended: bool  # the pod will not run again (terminal phase)
    end: datetime | None  # when it ended, if the pod says


def _time(text):
    value = from_isotime(text) if text else None
    return value if value is not None and value >= EPOCH_GUARD else None


def _container_states(pod):
    status = pod.get("status") or {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or ():
            yield from ((cs.get("state") or {}), (cs.get("lastState") or {}))


def container_started_at(pod):
    """The earliest container start, or None."""
    starts = []
    for state in _container_states(pod):
        for phase in ("running", "terminated"):
            value = _time((state.get(phase) or {}).get("startedAt"))
            if value is not None:
                starts.append(value)
    return min(starts) if starts else None


def started_at(pod):
    """The earliest container start, else the PodScheduled time, else None."""
    started = container_started_at(pod)
    if started is not None:
        return started
    for cond in (pod.get("status") or {}).get("conditions") or ():
        if cond.get("type") == "PodScheduled" and cond.get("status") == "True":
            return _time(cond.get("lastTransitionTime"))
    return None


def finished_at(pod):
    """The latest ``finishedAt`` of the pod's terminated containers, or None."""
    ends = [value for state in _container_states(pod)
            if (value := _time((state.get("terminated") or {}).get("finishedAt"))) is not None]
    return max(ends) if ends else None


def is_terminal(pod):
    return (pod.get("status") or {}).get("phase") in TERMINAL


def hold_of(pod, device_requests):
    """The :class:`Hold` of ``pod``, or None when it holds no devices or is not bound.

    ``device_requests``: ``pod -> {resource: units}`` (:func:`crater_hub.gpus.workloads.device_requests`).
    """
    spec = pod.get("spec") or {}
    node = spec.get("nodeName")
    if not node:
        return None
    devices = device_requests(pod)
    if not devices:
        return None
    meta = pod.get("metadata") or {}
    ended = is_terminal(pod)
    return Hold(uid=meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}",
                namespace=meta.get("namespace") or "", name=meta.get("name") or "", node=node,
                devices=devices, start=started_at(pod), firm=container_started_at(pod) is not None,
                ended=ended,
                end=finished_at(pod) if ended else None)


def ended_at(pod, deleted_at):
    """When a deleted pod's hold ended: its containers' last ``finishedAt``, else ``deleted_at``
    (the moment the deletion was seen: a pod deleted before its containers reported an end)."""
    return finished_at(pod) or deleted_at


def split_by_day(start, end):
    """``[(date, seconds)]`` of the UTC days ``[start, end)`` covers (naive UTC datetimes)."""
    out = []
    cursor = start
    while cursor < end:
        midnight = datetime.combine(cursor.date() + timedelta(days=1), datetime.min.time())
        upto = min(midnight, end)
        out.append((cursor.date(), (upto - cursor).total_seconds()))
        cursor = upto
    return out


def day_start(day: date):
    return datetime.combine(day, datetime.min.time())
