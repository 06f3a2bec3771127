"""Pods and Jobs end to end on localkube: scheduling, devices, processes, graceful deletion, Jobs."""

import time

from kubernetes_asyncio.client.exceptions import ApiException

from tests.helpers import wait_for


def pod(name, script, gpus=0, grace=None, restart="Never"):
    container = {"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", script]}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    spec = {"restartPolicy": restart, "containers": [container]}
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


async def phase(kube, name):
    try:
        return (await kube.core.read_namespaced_pod(name, "default")).status.phase
    except ApiException as e:
        if e.status == 404:
            return "Gone"
        raise


async def logs(kube, name):
    return await kube.core.read_namespaced_pod_log(name, "default")


async def test_gpu_pod_gets_two_distinct_devices_on_a_node_with_room(kube):
    await kube.core.create_namespaced_pod("default", pod("train", "echo gpus=$NVIDIA_VISIBLE_DEVICES", gpus=2))
    await wait_for(lambda: phase(kube, "train"), timeout=20)
    await wait_for(lambda: _equals(phase(kube, "train"), "Succeeded"), timeout=20, message="train Succeeded")
    placed = await kube.core.read_namespaced_pod("train", "default")
    node = await kube.core.read_node(placed.spec.node_name)
    assert int(node.status.allocatable["nvidia.com/gpu"]) >= 2
    line = (await logs(kube, "train")).strip()
    devices = line.removeprefix("gpus=").split(",")
    assert len(devices) == 2 and len(set(devices)) == 2, line


async def _equals(awaitable, expected):
    return (await awaitable) == expected


async def test_pod_larger_than_any_node_stays_pending_with_failed_scheduling(kube):
    await kube.core.create_namespaced_pod("default", pod("huge", "true", gpus=16))

    async def failed_event():
        events = await kube.core.list_namespaced_event(
            "default", field_selector="involvedObject.name=huge,reason=FailedScheduling")
        return events.items[0] if events.items else None

    event = await wait_for(failed_event, timeout=10, message="FailedScheduling event")
    assert event.type == "Warning" and event.source.component == "default-scheduler"
    assert event.message.startswith("0/3 nodes are available: 3 Insufficient nvidia.com/gpu."), event.message
    huge = await kube.core.read_namespaced_pod("huge", "default")
    assert huge.status.phase == "Pending" and not huge.spec.node_name
    scheduled = {c.type: c for c in huge.status.conditions}["PodScheduled"]
    assert (scheduled.status, scheduled.reason) == ("False", "Unschedulable")


async def test_graceful_deletion_sends_sigterm_then_removes(kube):
    script = "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.1; done"
    await kube.core.create_namespaced_pod("default", pod("polite", script, grace=20))
    await wait_for(lambda: _contains(logs(kube, "polite"), "ready"), timeout=20, message="polite ready")
    started = time.monotonic()
    deleted = await kube.core.delete_namespaced_pod("polite", "default")
    assert deleted.metadata.deletion_timestamp is not None
    assert await phase(kube, "polite") != "Gone"  # still there while it shuts down
    await wait_for(lambda: _equals(phase(kube, "polite"), "Gone"), timeout=15, message="polite removed")
    assert time.monotonic() - started < 10  # it exited on SIGTERM, long before its 20 s grace


async def test_process_ignoring_sigterm_is_killed_after_grace(kube):
    script = "trap '' TERM; echo ready; while true; do sleep 0.1; done"
    await kube.core.create_namespaced_pod("default", pod("stubborn", script, grace=1))
    await wait_for(lambda: _contains(logs(kube, "stubborn"), "ready"), timeout=20, message="stubborn ready")
    started = time.monotonic()
    await kube.core.delete_namespaced_pod("stubborn", "default")
    await wait_for(lambda: _equals(phase(kube, "stubborn"), "Gone"), timeout=15, message="stubborn removed")
    assert time.monotonic() - started >= 0.9


async def _contains(awaitable, text):
    try:
        return text in await awaitable
    except ApiException:
        return False


async def test_job_runs_to_completion_and_cleans_up_its_pods(kube):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"}, "spec": {
        "backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", "echo done"]}]}}}}
    await kube.batch.create_namespaced_job("default", job)

    async def complete():
        status = (await kube.batch.read_namespaced_job("once", "default")).status
        conds = {c.type: c.status for c in status.conditions or []}
        return conds.get("Complete") == "True" and status.succeeded == 1

    await wait_for(complete, timeout=30, message="job Complete")
    pods = await kube.core.list_namespaced_pod("default", label_selector="job-name=once")
    assert len(pods.items) == 1 and pods.items[0].metadata.owner_references[0].kind == "Job"
    assert (await logs(kube, pods.items[0].metadata.name)).strip() == "done"
    await kube.batch.delete_namespaced_job("once", "default", propagation_policy="Background")

    async def pods_gone():
        return not (await kube.core.list_namespaced_pod("default", label_selector="job-name=once")).items

    await wait_for(pods_gone, timeout=15, message="job pods garbage-collected")


async def test_failing_job_stops_at_backoff_limit(kube):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "flaky"}, "spec": {
        "backoffLimit": 1, "template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", "exit 3"]}]}}}}
    await kube.batch.create_namespaced_job("default", job)

    async def failed():
        status = (await kube.batch.read_namespaced_job("flaky", "default")).status
        conds = {c.type: c for c in status.conditions or []}
        return conds.get("Failed") if conds.get("Failed") and conds["Failed"].status == "True" else None

    condition = await wait_for(failed, timeout=60, message="job Failed")
    assert condition.reason == "BackoffLimitExceeded"
    assert (await kube.batch.read_namespaced_job("flaky", "default")).status.failed == 2
