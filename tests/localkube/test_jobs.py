"""The Job controller runs batch/v1 Jobs as kube-controller-manager does; tests play the kubelet."""

import re

import pytest

from crater_hub.localkube.gc import GarbageCollector
from crater_hub.localkube.jobs import JobController
from tests.localkube.helpers import wait_for

pytestmark = pytest.mark.asyncio


def start(cluster, *extra):
    (jobs, *_) = cluster.start(JobController, *extra)
    jobs.backoff_base = 0.05
    return jobs


def conditions(cluster, name):
    return {c["type"]: c for c in (cluster.job(name).get("status") or {}).get("conditions") or []}


def condition(cluster, name, type_):
    c = conditions(cluster, name).get(type_)
    return c if c and c["status"] == "True" else None


async def pods(cluster, job, n):
    """Wait until the Job has exactly ``n`` pods that are neither finished nor deleted."""

    def live():
        found = [
            p
            for p in cluster.pods_of(job)
            if p["status"]["phase"] not in ("Succeeded", "Failed")
            and not p["metadata"].get("deletionTimestamp")
        ]
        return found if len(found) == n else None

    return await wait_for(live, timeout=5, message=f"{n} live pods of {job}")


async def test_job_runs_a_pod_to_completion(make_cluster):
    cluster = make_cluster()
    start(cluster)
    job = cluster.create_job("once")
    (pod,) = await pods(cluster, "once", 1)
    meta = pod["metadata"]
    assert re.fullmatch(r"once-[bcdfghjklmnpqrstvwxz2456789]{5}", meta["name"])
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": "once",
            "uid": job["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert meta["labels"]["batch.kubernetes.io/controller-uid"] == job["metadata"]["uid"]
    assert pod["spec"]["containers"][0]["command"] == ["sh", "-c", "true"]
    await wait_for(lambda: cluster.job("once")["status"].get("active") == 1, timeout=5)
    status = cluster.job("once")["status"]
    assert status["startTime"] and status["ready"] == 0 and "succeeded" not in status

    cluster.set_phase(meta["name"], "Running", conditions=[{"type": "Ready", "status": "True"}])
    await wait_for(lambda: cluster.job("once")["status"]["ready"] == 1, timeout=5)
    cluster.set_phase(meta["name"], "Succeeded")
    complete = await wait_for(
        lambda: condition(cluster, "once", "Complete"), timeout=5, message="Complete"
    )
    assert (complete["reason"], complete["message"]) == (
        "CompletionsReached",
        "Reached expected number of succeeded pods",
    )
    assert list(conditions(cluster, "once")) == ["SuccessCriteriaMet", "Complete"]
    status = cluster.job("once")["status"]
    assert status["succeeded"] == 1 and "active" not in status and "failed" not in status
    assert status["completionTime"] and status["terminating"] == 0
    assert [e["message"] for e in cluster.events("once", "SuccessfulCreate")] == [
        f"Created pod: {meta['name']}"
    ]
    (done,) = cluster.events("once", "Completed")
    assert done["message"] == "Job completed" and done["source"]["component"] == "job-controller"
    assert len(cluster.pods_of("once")) == 1  # finished pods stay until the Job goes


async def test_parallelism_and_completions(make_cluster):
    cluster = make_cluster()
    start(cluster)
    cluster.create_job("batch", parallelism=2, completions=5)
    names = set()
    for finished in range(5):
        live = await pods(cluster, "batch", min(2, 5 - finished))
        names.update(p["metadata"]["name"] for p in live)
        cluster.set_phase(live[0]["metadata"]["name"], "Succeeded")
        await wait_for(
            lambda n=finished + 1: cluster.job("batch")["status"].get("succeeded") == n, timeout=5
        )
    await wait_for(lambda: condition(cluster, "batch", "Complete"), timeout=5)
    assert len(names) == 5 and len(cluster.pods_of("batch")) == 5
    assert cluster.job("batch")["status"]["succeeded"] == 5


async def test_backoff_limit_fails_the_job_and_counts_each_pod_once(make_cluster):
    cluster = make_cluster()
    start(cluster)
    cluster.create_job("flaky", backoffLimit=1)
    (first,) = await pods(cluster, "flaky", 1)
    cluster.set_phase(first["metadata"]["name"], "Failed")
    (second,) = await pods(cluster, "flaky", 1)  # replaced after the back-off
    assert second["metadata"]["name"] != first["metadata"]["name"]
    # A failed pod deleted before the next failure still counts, and counts once.
    cluster.store.delete(cluster.res("", "pods"), "default", first["metadata"]["name"])
    assert cluster.job("flaky")["status"]["failed"] == 1
    cluster.set_phase(second["metadata"]["name"], "Failed")
    failed = await wait_for(
        lambda: condition(cluster, "flaky", "Failed"), timeout=5, message="Failed"
    )
    assert (failed["reason"], failed["message"]) == (
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    )
    assert list(conditions(cluster, "flaky")) == ["FailureTarget", "Failed"]
    status = cluster.job("flaky")["status"]
    assert status["failed"] == 2 and "active" not in status and "completionTime" not in status
    (event,) = cluster.events("flaky", "BackoffLimitExceeded")
    assert (
        event["type"] == "Warning"
        and event["message"] == "Job has reached the specified backoff limit"
    )
    assert len(cluster.pods_of("flaky")) == 1  # no third pod


async def test_restarts_count_against_the_backoff_limit_with_on_failure(make_cluster):
    cluster = make_cluster()
    start(cluster)
    cluster.create_job("crashy", restart="OnFailure", backoffLimit=2)
    (pod,) = await pods(cluster, "crashy", 1)
    cluster.bind(pod["metadata"]["name"], "cpu-0")
    cluster.set_phase(
        pod["metadata"]["name"], "Running", containerStatuses=[{"name": "main", "restartCount": 2}]
    )
    await wait_for(lambda: condition(cluster, "crashy", "FailureTarget"), timeout=5)
    assert cluster.pod(pod["metadata"]["name"])["metadata"][
        "deletionTimestamp"
    ]  # graceful: still terminating
    assert (
        not condition(cluster, "crashy", "Failed")
        and cluster.job("crashy")["status"]["terminating"] == 1
    )
    cluster.finish_deletion(pod["metadata"]["name"])
    failed = await wait_for(lambda: condition(cluster, "crashy", "Failed"), timeout=5)
    assert (
        failed["reason"] == "BackoffLimitExceeded"
        and cluster.job("crashy")["status"]["failed"] == 1
    )


async def test_active_deadline_fails_the_job_once_its_pods_are_gone(make_cluster):
    cluster = make_cluster()
    start(cluster)
    cluster.create_job("slow", activeDeadlineSeconds=1)
    (pod,) = await pods(cluster, "slow", 1)
    name = pod["metadata"]["name"]
    cluster.bind(name, "cpu-0")
    cluster.set_phase(name, "Running")
    await wait_for(
        lambda: condition(cluster, "slow", "FailureTarget"), timeout=5, message="FailureTarget"
    )
    assert cluster.pod(name)["metadata"]["deletionTimestamp"]
    assert [e["message"] for e in cluster.events("slow", "SuccessfulDelete")] == [
        f"Deleted pod: {name}"
    ]
    assert not condition(cluster, "slow", "Failed")
    cluster.finish_deletion(name)
    failed = await wait_for(
        lambda: condition(cluster, "slow", "Failed"), timeout=5, message="Failed"
    )
    assert (failed["reason"], failed["message"]) == (
        "DeadlineExceeded",
        "Job was active longer than specified deadline",
    )
    assert cluster.job("slow")["status"]["failed"] == 1
    (event,) = cluster.events("slow", "DeadlineExceeded")
    assert event["type"] == "Warning"


async def test_suspend_and_resume(make_cluster):
    cluster = make_cluster()
    start(cluster)
    cluster.create_job("later", suspend=True)
    suspended = await wait_for(lambda: condition(cluster, "later", "Suspended"), timeout=5)
    assert (suspended["reason"], suspended["message"]) == ("JobSuspended", "Job suspended")
    assert not cluster.pods_of("later") and "startTime" not in cluster.job("later")["status"]

    jobs = cluster.registry.lookup("batch", "v1", "jobs")
    cluster.store.mutate(
        jobs, "default", "later", lambda j: j["spec"].__setitem__("suspend", False)
    )
    (pod,) = await pods(cluster, "later", 1)
    resumed = await wait_for(
        lambda: (
            conditions(cluster, "later")["Suspended"]["status"] == "False"
            and conditions(cluster, "later")["Suspended"]
        ),
        timeout=5,
    )
    assert (resumed["reason"], resumed["message"]) == ("JobResumed", "Job resumed")
    assert cluster.job("later")["status"]["startTime"]

    cluster.store.mutate(jobs, "default", "later", lambda j: j["spec"].__setitem__("suspend", True))
    await wait_for(
        lambda: not cluster.pods_of("later"), timeout=5, message="pods deleted on suspend"
    )
    await wait_for(lambda: condition(cluster, "later", "Suspended"), timeout=5)
    status = cluster.job("later")["status"]
    assert "failed" not in status and "active" not in status and "startTime" not in status
    (suspended_event,) = cluster.events("later", "Suspended")
    (resumed_event,) = cluster.events("later", "Resumed")
    assert suspended_event["count"] == 2 and resumed_event["message"] == "Job resumed"


async def test_a_running_pod_deleted_by_someone_counts_as_failed_and_is_replaced(make_cluster):
    cluster = make_cluster()
    start(cluster)
    cluster.create_job("victim")
    (pod,) = await pods(cluster, "victim", 1)
    cluster.store.delete(cluster.res("", "pods"), "default", pod["metadata"]["name"])
    (replacement,) = await pods(cluster, "victim", 1)
    assert replacement["metadata"]["uid"] != pod["metadata"]["uid"]
    assert cluster.job("victim")["status"]["failed"] == 1


async def test_ttl_after_finished_deletes_the_job_and_its_pods(make_cluster):
    cluster = make_cluster()
    start(cluster, GarbageCollector)
    cluster.create_job("short", ttlSecondsAfterFinished=1)
    (pod,) = await pods(cluster, "short", 1)
    cluster.set_phase(pod["metadata"]["name"], "Succeeded")
    await wait_for(lambda: condition(cluster, "short", "Complete"), timeout=5)
    assert cluster.job("short") is not None
    await wait_for(
        lambda: cluster.job("short") is None, timeout=5, message="Job deleted after its TTL"
    )
    await wait_for(lambda: not cluster.pods_of("short"), timeout=5, message="its pods collected")
