"""Kueue as the queue engine: what a Workload's conditions and Kueue's visibility API mean to us.

With ``Crater.job_queue_backend = "kueue"`` the hub admits nothing itself. Each job's batch/v1
Job is created at submit time, suspended, labelled ``kueue.x-k8s.io/queue-name`` with the
configured LocalQueue; Kueue makes a Workload for it (owned by the Job), reserves quota in its
ClusterQueue, admits it and unsuspends the Job, or evicts it (suspending the Job again) to make
room for a more important one. The service follows that through two reads, both pure functions
here so that they are tested as data:

- :func:`verdict`: a Workload (its ``status.conditions``) as one of our states, with the reason
  Kueue gives (``QuotaReserved=False`` carries the "insufficient quota" message users ask for);
- :func:`positions`: a ``PendingWorkloadsSummary`` from
  ``/apis/visibility.kueue.x-k8s.io/v1beta2/namespaces/<ns>/localqueues/<lq>/pendingworkloads``
  as Job name -> 1-based position in the LocalQueue (Kueue counts from 0).

Kueue gives no start-time estimate, so jobs on this backend have none. An evicted job is shown
``preempted``; whether it runs again is our ``job_requeue_preempted`` setting (a new attempt, a new
suspended Job), the same on both backends.
"""

from dataclasses import dataclass

from ..db.models import from_isotime

GROUP = "kueue.x-k8s.io"
VERSION = "v1beta2"
WORKLOADS = f"{GROUP}/{VERSION}/workloads"
QUEUE_LABEL = f"{GROUP}/queue-name"
PRIORITY_CLASS_LABEL = f"{GROUP}/priority-class"  # names a WorkloadPriorityClass
VISIBILITY = f"/apis/visibility.{GROUP}/{VERSION}"


def pending_workloads_path(namespace, local_queue):
    return f"{VISIBILITY}/namespaces/{namespace}/localqueues/{local_queue}/pendingworkloads"


def owner_job(obj):
    """The name of the batch/v1 Job that owns a Workload (or a pending-workload item)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("kind") == "Job" and (ref.get("apiVersion") or "").startswith("batch/"):
            return ref.get("name")
    return None


def _conditions(workload):
    return {c.get("type"): c for c in (workload.get("status") or {}).get("conditions") or ()}


def _true(conditions, kind):
    c = conditions.get(kind)
    return c if c is not None and c.get("status") == "True" else None


@dataclass(frozen=True)
class Verdict:
    """What a Workload says of its job: ``state`` is "queued", "admitted", "evicted" or
    "finished"; ``reason`` is Kueue's words for it."""

    state: str
    reason: str


def verdict(workload):
    """Our reading of a Workload's conditions (None: no Workload yet, Kueue has not seen it)."""
    if workload is None:
        return None
    conds = _conditions(workload)
    if done := _true(conds, "Finished"):
        return Verdict("finished", done.get("message") or done.get("reason") or "finished")
    # Evicted (reason Preempted, InactiveWorkload, PodsReadyTimeout, ...) stays True until Kueue
    # reserves quota for the Workload again, when it turns False ("Previously: ..."); Preempted
    # says by whom when the eviction was a preemption.
    if evicted := _true(conds, "Evicted"):
        return Verdict("evicted", _words(_true(conds, "Preempted") or evicted, "evicted by Kueue"))
    if admitted := _true(conds, "Admitted"):
        queue = ((workload.get("status") or {}).get("admission") or {}).get("clusterQueue")
        where = f" in ClusterQueue {queue}" if queue else ""
        return Verdict("admitted", f"admitted by Kueue{where}" +
                       (f": {admitted['message']}" if admitted.get("message") else ""))
    if _true(conds, "QuotaReserved"):
        return Verdict("queued", "quota reserved; waiting for Kueue's admission checks")
    pending = conds.get("QuotaReserved")
    if pending is not None and pending.get("message"):
        return Verdict("queued", pending["message"])
    return Verdict("queued", "waiting for Kueue to admit it")


def evicted_since(workload, since):
    """A Verdict("evicted") when the Workload was evicted after ``since`` (a naive UTC datetime:
    when the hub saw it admitted) even if Kueue has admitted it again meanwhile — its Evicted
    condition then reads False, "Previously: ...", changed after ``since``. None otherwise.

    This is how an eviction between two looks of the hub (or while it was down) is not missed:
    the job's pod was stopped and started again, which is a preemption however it ended."""
    if workload is None or since is None:
        return None
    found = verdict(workload)
    if found is not None and found.state == "evicted":
        return found
    evicted = _conditions(workload).get("Evicted")
    changed = from_isotime((evicted or {}).get("lastTransitionTime"))
    if changed is not None and changed > since:
        return Verdict("evicted", _words(evicted, "evicted by Kueue"))
    return None


def _words(condition, default):
    reason, message = condition.get("reason"), condition.get("message")
    if reason and message:
        return f"{reason}: {message}"
    return message or reason or default


def positions(summary):
    """Job name -> 1-based position in its LocalQueue, from a PendingWorkloadsSummary."""
    out = {}
    for item in (summary or {}).get("items") or ():
        name = owner_job(item)
        position = item.get("positionInLocalQueue")
        if name is not None and isinstance(position, int):
            out[name] = position + 1
    return out
