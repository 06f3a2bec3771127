"""The batch/v1 Job controller: pods from the template until enough succeed, or the Job fails.

NonIndexed Jobs as kube-controller-manager runs them: ``min(parallelism, completions - succeeded)``
pods at a time, named ``<job>-<5 random chars>`` and owned by the Job; ``backoffLimit``,
``activeDeadlineSeconds``, ``suspend`` and ``ttlSecondsAfterFinished``; the status counters and
the Kubernetes 1.31 conditions (``SuccessCriteriaMet``/``FailureTarget`` as soon as the outcome is
known, ``Complete``/``Failed`` once no pod of the Job is still running).

Each finished pod is counted exactly once. The controller sees every pod change through the store
listener, so it records a pod's outcome the moment the pod turns Succeeded or Failed, or vanishes
before that (a pod deleted while running counts as failed, as in Kubernetes). The record lives as
long as the store itself, which is what a finalizer buys a real controller; pods therefore carry no
``batch.kubernetes.io/job-tracking`` finalizer here.
"""

import random
import time

from . import events
from .controller import Controller
from .errors import ApiError
from .store import isotime, parse_time, utcnow

JOBS = ("batch", "jobs")
PODS = ("", "pods")
COMPONENT = "job-controller"
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet of Kubernetes' generated name suffixes

BACKOFF_LIMIT = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE = ("DeadlineExceeded", "Job was active longer than specified deadline")
COMPLETIONS = ("CompletionsReached", "Reached expected number of succeeded pods")


def _owner_job(pod):
    """(uid, name) of the Job controlling ``pod``, or None."""
    for ref in pod["metadata"].get("ownerReferences") or []:
        if (
            ref.get("controller")
            and ref.get("kind") == "Job"
            and ref.get("apiVersion", "").startswith("batch/")
        ):
            return ref["uid"], ref["name"]
    return None


def _condition(status, type_):
    for c in status.get("conditions") or []:
        if c["type"] == type_ and c["status"] == "True":
            return c
    return None


def _set_condition(status, type_, value, reason, message, now):
    """Add or update a Job condition; times move only when its status changes."""
    conditions = status.setdefault("conditions", [])
    for c in conditions:
        if c["type"] == type_:
            if c["status"] != value:
                c.update(status=value, lastProbeTime=now, lastTransitionTime=now)
            c.update(reason=reason, message=message)
            return
    conditions.append(
        {
            "type": type_,
            "status": value,
            "lastProbeTime": now,
            "lastTransitionTime": now,
            "reason": reason,
            "message": message,
        }
    )


def _is_ready(pod):
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in pod.get("status", {}).get("conditions") or []
    )


def _restarts(pod):
    status = pod.get("status", {})
    return sum(
        c.get("restartCount", 0)
        for c in (status.get("initContainerStatuses") or [])
        + (status.get("containerStatuses") or [])
    )


class JobController(Controller):
    """Runs batch/v1 Jobs; see the module docstring."""

    watches = (JOBS,)
    #: seconds before replacing a failed pod, doubled per failure up to ``backoff_cap``
    backoff_base = 1.0
    backoff_cap = 60.0

    def __init__(self, cluster):
        super().__init__(cluster)
        self._pods = {}  # job uid -> {pod uid: (namespace, name)} of its pods still in the store
        self._outcomes = {}  # job uid -> {pod uid: "Succeeded" | "Failed"}: each pod counted once
        self._last_failure = {}  # job uid -> time.monotonic() of its latest failed pod
        self._started = {}  # job uid -> when it started, finer than status.startTime's seconds
        self._uncounted = set()  # uids of pods this controller deleted without it being a failure

    # -- tracking pods ---------------------------------------------------------------------------

    def keys_for(self, change):
        meta = change.obj["metadata"]
        if change.skey == JOBS:
            if change.type == "DELETED":
                for table in (self._pods, self._outcomes, self._last_failure, self._started):
                    table.pop(meta["uid"], None)
                return []
            self._pods.setdefault(meta["uid"], {})
            return [(JOBS, meta["namespace"], meta["name"])]
        if change.skey != PODS:
            return []
        uid, phase = meta["uid"], change.obj.get("status", {}).get("phase")
        # A pod that ends without succeeding is a failure, unless this controller ended it on
        # purpose (suspend, scale-down, success): those are not held against the Job.
        if phase == "Succeeded":
            outcome = "Succeeded"
        elif phase == "Failed" or change.type == "DELETED":
            outcome = None if uid in self._uncounted else "Failed"
        else:
            outcome = None
        if change.type == "DELETED":
            self._uncounted.discard(uid)
        owner = _owner_job(change.obj)
        if owner is None or owner[0] not in self._pods:
            return []
        job_uid, job_name = owner
        if change.type == "DELETED":
            self._pods[job_uid].pop(uid, None)
        else:
            self._pods[job_uid][uid] = (meta["namespace"], meta["name"])
        self._record(job_uid, uid, outcome)
        return [(JOBS, meta["namespace"], job_name)]

    def _record(self, job_uid, pod_uid, outcome):
        outcomes = self._outcomes.setdefault(job_uid, {})
        if outcome and pod_uid not in outcomes:
            outcomes[pod_uid] = outcome
            if outcome == "Failed":
                self._last_failure[job_uid] = time.monotonic()

    # -- reconciling -----------------------------------------------------------------------------

    async def reconcile(self, key):
        _, namespace, name = key
        job = self.store.find(self.res("batch", "jobs"), namespace, name)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return None
        status = dict(job.get("status") or {})
        if _condition(status, "Complete") or _condition(status, "Failed"):
            return self._expire(job, status)
        uid = job["metadata"]["uid"]
        outcomes = self._outcomes.get(uid, {})
        active = [
            p for p in self._unfinished_pods(uid) if not p["metadata"].get("deletionTimestamp")
        ]
        now = isotime()
        again = []

        if job["spec"].get("suspend"):
            self._delete(job, active, counted=False)
            active = []
            if not _condition(status, "Suspended"):
                _set_condition(status, "Suspended", "True", "JobSuspended", "Job suspended", now)
                status.pop("startTime", None)
                events.record(self.store, job, "Suspended", "Job suspended", component=COMPONENT)
        else:
            if _condition(status, "Suspended"):
                _set_condition(status, "Suspended", "False", "JobResumed", "Job resumed", now)
                events.record(self.store, job, "Resumed", "Job resumed", component=COMPONENT)
            if "startTime" not in status:
                self._started[uid] = utcnow()
                status["startTime"] = isotime(self._started[uid])
            active = self._manage(job, status, active, outcomes, again)

        # Deleting pods just now may have finished some (counted) or left them terminating.
        succeeded = sum(1 for o in outcomes.values() if o == "Succeeded")
        failed = sum(1 for o in outcomes.values() if o == "Failed")
        terminating = [
            p for p in self._unfinished_pods(uid) if p["metadata"].get("deletionTimestamp")
        ]
        finishing = _condition(status, "FailureTarget") or _condition(status, "SuccessCriteriaMet")
        if finishing and not active and not terminating:
            if finishing["type"] == "FailureTarget":
                _set_condition(
                    status, "Failed", "True", finishing["reason"], finishing["message"], now
                )
                events.record(
                    self.store,
                    job,
                    finishing["reason"],
                    finishing["message"],
                    type_="Warning",
                    component=COMPONENT,
                )
            else:
                _set_condition(
                    status, "Complete", "True", finishing["reason"], finishing["message"], now
                )
                status["completionTime"] = now
                events.record(self.store, job, "Completed", "Job completed", component=COMPONENT)
        for field, value in (("active", len(active)), ("succeeded", succeeded), ("failed", failed)):
            if value:
                status[field] = value
            else:
                status.pop(field, None)
        status["ready"] = sum(1 for p in active if _is_ready(p))
        status["terminating"] = len(terminating)
        status["uncountedTerminatedPods"] = {}
        updated = self.store.mutate(
            self.res("batch", "jobs"),
            namespace,
            name,
            lambda j: j.__setitem__("status", status),
            subresource="status",
        )
        if updated and (_condition(status, "Complete") or _condition(status, "Failed")):
            again.append(self._expire(updated, status))
        again = [a for a in again if a is not None]
        return min(again) if again else None

    def _unfinished_pods(self, job_uid):
        """The Job's pods in the store whose outcome is not yet recorded (running or terminating)."""
        outcomes = self._outcomes.get(job_uid, {})
        found = (
            self.store.find(self.res("", "pods"), ns, n)
            for ns, n in self._pods.get(job_uid, {}).values()
        )
        return [p for p in found if p is not None and p["metadata"]["uid"] not in outcomes]

    def _manage(self, job, status, active, outcomes, again):
        """Decide the Job's outcome or keep the right number of pods running; returns the active pods."""
        spec = job["spec"]
        uid = job["metadata"]["uid"]
        now = isotime()
        succeeded = sum(1 for o in outcomes.values() if o == "Succeeded")
        failed = sum(1 for o in outcomes.values() if o == "Failed")
        if _condition(status, "FailureTarget") or _condition(status, "SuccessCriteriaMet"):
            self._delete(job, active, counted=bool(_condition(status, "FailureTarget")))
            return []
        completions, parallelism = spec.get("completions"), spec.get("parallelism", 1)
        limit = spec.get("backoffLimit", 6)
        restarts = (
            sum(_restarts(p) for p in active)
            if spec["template"]["spec"].get("restartPolicy") == "OnFailure"
            else 0
        )
        deadline = spec.get("activeDeadlineSeconds")
        started = self._started.get(uid)
        if started is None or isotime(started) != status["startTime"]:
            started = parse_time(status["startTime"])
        elapsed = (utcnow() - started).total_seconds()
        failure = None
        if failed > limit or restarts >= max(limit, 1):
            failure = BACKOFF_LIMIT
        elif deadline is not None and elapsed >= deadline:
            failure = DEADLINE
        if failure:
            _set_condition(status, "FailureTarget", "True", *failure, now)
            self._delete(job, active, counted=True)
            return []
        if (succeeded >= completions) if completions is not None else (succeeded and not active):
            _set_condition(status, "SuccessCriteriaMet", "True", *COMPLETIONS, now)
            self._delete(job, active, counted=False)
            return []
        if deadline is not None:
            again.append(deadline - elapsed)
        want = (
            min(parallelism, completions - succeeded)
            if completions is not None
            else (0 if succeeded else parallelism)
        )
        if len(active) > want:
            # Scale down: pods not yet running go first, then the newest.
            newest = sorted(active, key=lambda p: p["metadata"]["creationTimestamp"], reverse=True)
            extra = sorted(newest, key=lambda p: p["status"].get("phase") == "Running")
            self._delete(job, extra[: len(active) - want], counted=False)
            return extra[len(active) - want :]
        if len(active) < want:
            if failed:
                wait = (
                    self._last_failure.get(uid, 0)
                    + min(self.backoff_base * 2 ** (failed - 1), self.backoff_cap)
                    - time.monotonic()
                )
                if wait > 0:
                    again.append(wait)
                    return active
            for _ in range(want - len(active)):
                pod = self._create_pod(job)
                if pod is None:
                    again.append(self.backoff_base)
                    break
                active.append(pod)
        return active

    def _create_pod(self, job):
        meta, template = job["metadata"], job["spec"]["template"]
        base = f"{meta['name']}-"[:58]
        tmeta = template.get("metadata") or {}
        pod_meta = {
            "generateName": base,
            "namespace": meta["namespace"],
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        for field in ("labels", "annotations"):
            if tmeta.get(field):
                pod_meta[field] = dict(tmeta[field])
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": pod_meta,
            "spec": template.get("spec") or {},
        }
        for _ in range(10):
            pod_meta["name"] = base + "".join(random.choices(NAME_CHARS, k=5))
            try:
                pod = self.store.create(self.res("", "pods"), body, meta["namespace"])
            except ApiError as e:
                if e.code == 409:
                    continue
                events.record(
                    self.store,
                    job,
                    "FailedCreate",
                    f"Error creating: {e.message}",
                    type_="Warning",
                    component=COMPONENT,
                )
                return None
            events.record(
                self.store,
                job,
                "SuccessfulCreate",
                f"Created pod: {pod['metadata']['name']}",
                component=COMPONENT,
            )
            return pod
        return None

    def _delete(self, job, pods, counted):
        """Delete ``pods`` (gracefully); ``counted``: a pod that never finishes counts as failed."""
        for pod in pods:
            meta = pod["metadata"]
            if not counted:
                self._uncounted.add(meta["uid"])  # before: the pod may be gone within the call
            try:
                self.store.delete(self.res("", "pods"), meta["namespace"], meta["name"])
            except ApiError as e:
                self._uncounted.discard(meta["uid"])
                if e.code != 404:
                    raise
                continue
            events.record(
                self.store,
                job,
                "SuccessfulDelete",
                f"Deleted pod: {meta['name']}",
                component=COMPONENT,
            )

    def _expire(self, job, status):
        """ttlSecondsAfterFinished: delete a finished Job once its time is up; else seconds left."""
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is None:
            return None
        failed = _condition(status, "Failed")
        finished = status.get("completionTime") or (failed and failed["lastTransitionTime"])
        left = ttl - (utcnow() - parse_time(finished)).total_seconds()
        if left > 0:
            return left
        meta = job["metadata"]
        try:
            self.store.delete(
                self.res("batch", "jobs"),
                meta["namespace"],
                meta["name"],
                propagation="Foreground",
                preconditions={"uid": meta["uid"]},
            )
        except ApiError as e:
            if e.code not in (404, 409):
                raise
        return None
