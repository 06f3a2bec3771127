"""A job's timeline: its transitions and its Kubernetes events, in the order they happened.

Sorting them by timestamp alone gets it wrong. Kubernetes stamps events to the second (``…:45Z``),
the hub its transitions to the millisecond (``…:45.350Z``), and a job's first second often holds
both: ``queued``, ``admitted``, then the Job controller's ``SuccessfulCreate``, the pod's
``Scheduled``, ``Pulled``, ``Created``, ``Started``, then ``running``. Within one second:

- transitions the hub *decides* (queued, admitted, cancelled, preempted) come before Kubernetes'
  events of that second, which react to them (a Job is created once admitted, a pod killed once
  cancelled);
- transitions the hub *observes* (running, succeeded, failed) come after them (the hub sees a pod
  running after the kubelet has started it);
- Kubernetes' events among themselves keep the order the API server stored them in (their
  ``resourceVersion``: a repeated event moves to its latest occurrence, as ``lastTimestamp`` does).
"""

from datetime import datetime

DECIDED = frozenset({"queued", "admitted", "cancelled", "preempted"})
_NEVER = float("-inf")


def _time(text):
    try:
        return datetime.fromisoformat(text).timestamp() if text else _NEVER
    except ValueError:
        return _NEVER


def _version(obj):
    version = (obj.get("metadata") or {}).get("resourceVersion") or ""
    return int(version) if version.isdigit() else 0


def transition_key(event):
    """Sort key of a transition (``reason``: its state, ``at``: ISO time to the millisecond)."""
    at = _time(event["at"])
    second = at // 1 if at != _NEVER else _NEVER
    return (second, 0 if event["reason"] in DECIDED else 2, at)


def kube_event_key(at, obj):
    """Sort key of a Kubernetes Event object ``obj`` shown at ``at``."""
    at = _time(at)
    return (at // 1 if at != _NEVER else _NEVER, 1, _version(obj))


def ordered(keyed):
    """``[(key, event)]`` -> the events, oldest first."""
    return [event for _, event in sorted(keyed, key=lambda pair: pair[0])]
