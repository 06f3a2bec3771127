"""What a Kubernetes Job and its pod say about how a job went: pure reads of the objects the
watch caches hold (conditions, container states), shared by the reconciler and the backends."""

from ..db.models import from_isotime
from . import manifest


def exit_info(pod):
    """(exit code, reason) of the job container of ``pod`` once it terminated, else (None, None)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") != manifest.CONTAINER:
            continue
        term = (status.get("state") or {}).get("terminated") or \
            (status.get("lastState") or {}).get("terminated")
        if term:
            return term.get("exitCode"), term.get("reason")
    return None, None


def start_info(pod, k8s_job):
    """(started, node) of a job that ended before the hub saw its pod running: the container's
    ``startedAt``; the Job's ``startTime`` when the pod is gone; (None, None) when its container
    never started."""
    if pod is None:
        return from_isotime((k8s_job.get("status") or {}).get("startTime")), None
    node = (pod.get("spec") or {}).get("nodeName")
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        term = (status.get("state") or {}).get("terminated") or {}
        # a container that never started reads 1970-01-01 (or nothing) here, on real clusters too
        if status.get("name") == manifest.CONTAINER and (term.get("startedAt") or "1970") > "1971":
            return from_isotime(term["startedAt"]), node
    return None, None


def condition(k8s_job, kind):
    for c in (k8s_job.get("status") or {}).get("conditions") or ():
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def ended(k8s_job):
    """Whether the Job ran to an end (or is about to: the *Target/*Met conditions come first)."""
    return any(condition(k8s_job, kind) for kind in
               ("Complete", "Failed", "SuccessCriteriaMet", "FailureTarget"))


def pod_running(pod):
    return (pod.get("status") or {}).get("phase") == "Running"


def container_started(pod):
    """Whether the job container of ``pod`` runs or ran (so that it has a log to follow)."""
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") == manifest.CONTAINER:
            state = status.get("state") or {}
            return bool(state.get("running") or state.get("terminated") or
                        (status.get("lastState") or {}).get("terminated"))
    return False
