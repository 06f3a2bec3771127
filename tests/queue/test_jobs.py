"""The job queue end to end: the real hub on localkube, driven through /hub/api/crater/jobs."""

import asyncio

from ..e2e.hub import api_request
from ..helpers import wait_for
from .helpers import FINAL, job, logs, release_command, submit, wait_state


async def test_job_succeeds_and_its_output_outlives_its_pod(hub, make_user, queue_cluster):
    name, token = await make_user()
    model = await submit(hub, token, profile="cpu", command="echo hello from a job; echo line two")
    assert model["state"] in ("queued", "admitted", "running")
    assert model["owner"] == name and model["command"] == ["sh", "-c",
                                                            "echo hello from a job; echo line two"]
    done = await wait_state(hub, token, model["id"], ("succeeded", "failed"))
    assert done["state"] == "succeeded", done
    assert done["exit_code"] == 0
    assert [t["state"] for t in done["transitions"]][:1] == ["queued"]
    assert "succeeded" in [t["state"] for t in done["transitions"]]
    assert done["started"] and done["finished"] and done["k8s_job"] == f"crater-job-{done['id']}"
    # the hub deletes the Job (and its pod) once the outcome and log tail are stored
    await wait_for(lambda: _pod_count(queue_cluster, done["k8s_job"]) == 0, timeout=30,
                   message="the job's pod to be deleted")
    code, content_type, text = await logs(hub, token, model["id"])
    assert code == 200 and content_type.startswith("text/plain")
    assert text == "hello from a job\nline two\n"
    code, _, text = await logs(hub, token, model["id"], "?tail=1")
    assert text == "line two\n"


def _pod_count(cluster, job_name):
    import json
    import urllib.request

    with urllib.request.urlopen(
            f"{cluster.url}/api/v1/namespaces/default/pods?labelSelector=job-name%3D{job_name}") as r:
        return len(json.load(r)["items"])


async def test_exit_code_3_fails_with_the_exit_code(hub, make_user):
    _, token = await make_user()
    model = await submit(hub, token, profile="cpu", command=["sh", "-c", "echo bad >&2; exit 3"])
    done = await wait_state(hub, token, model["id"], ("succeeded", "failed"))
    assert done["state"] == "failed" and done["exit_code"] == 3
    assert done["reason"] == "exit code 3"
    assert (await logs(hub, token, model["id"]))[2] == "bad\n"


async def test_another_users_job_is_404_and_finished_cancel_is_409(hub, make_user):
    _, token = await make_user()
    _, other = await make_user()
    model = await submit(hub, token, profile="cpu", command="true")
    r = await api_request(hub, f"crater/jobs/{model['id']}", token=other)
    assert r.code == 404
    r = await api_request(hub, f"crater/jobs/{model['id']}", "DELETE", token=other)
    assert r.code == 404
    await wait_state(hub, token, model["id"], "succeeded")
    r = await api_request(hub, f"crater/jobs/{model['id']}", "DELETE", token=token)
    assert r.code == 409 and "already ended" in r.data["message"]
    mine = await api_request(hub, "crater/jobs", token=other)
    assert mine.code == 200 and mine.data["jobs"] == []
    assert (await job(hub, token, model["id"]))["state"] == "succeeded"


async def test_cancel_running_job_stops_its_pod(hub, make_user, queue_cluster, tmp_path):
    _, token = await make_user()
    model = await submit(hub, token, profile="cpu", command=release_command(tmp_path, "never"))
    running = await wait_state(hub, token, model["id"], "running")
    await wait_for(lambda: _pod_count(queue_cluster, running["k8s_job"]) == 1, timeout=10,
                   message="the job's pod")
    r = await api_request(hub, f"crater/jobs/{model['id']}", "DELETE", token=token)
    assert r.code == 200 and r.data["state"] == "cancelled", r
    assert r.data["reason"].startswith("cancelled by ")
    await wait_for(lambda: _pod_count(queue_cluster, running["k8s_job"]) == 0, timeout=30,
                   message="the cancelled job's pod to stop")
    assert "started never" in (await logs(hub, token, model["id"]))[2]
    assert (await job(hub, token, model["id"]))["state"] == "cancelled"


async def test_quota_holds_the_third_job_at_position_1_until_one_ends(hub, make_user, tmp_path):
    _, token = await make_user()  # default quota: 2 GPUs
    first, second, third = [
        await submit(hub, token, profile="gpu", accelerator="t4", gpus=1,
                     command=release_command(tmp_path, f"job{i}")) for i in range(3)]
    await wait_state(hub, token, first["id"], "running")
    await wait_state(hub, token, second["id"], "running")
    queued = await job(hub, token, third["id"])
    assert queued["state"] == "queued" and queued["position"] == 1, queued
    assert "quota" in queued["waiting"]
    assert queued["estimated_start"] is not None
    (tmp_path / "job0").touch()
    assert (await wait_state(hub, token, first["id"], FINAL))["state"] == "succeeded"
    await wait_state(hub, token, third["id"], ("admitted", "running"))
    (tmp_path / "job1").touch()
    (tmp_path / "job2").touch()
    assert (await wait_state(hub, token, third["id"], FINAL))["state"] == "succeeded"


async def _fill_a100(hub, make_user, tmp_path, holders):
    """Hold all 4 A100s with jobs of ``holders`` (user tokens, one job each per entry)."""
    jobs = []
    for i, token in enumerate(holders):
        jobs.append((token, await submit(hub, token, profile="gpu", accelerator="a100", gpus=1,
                                         command=release_command(tmp_path, f"hold{i}"))))
    for token, model in jobs:
        await wait_state(hub, token, model["id"], "running")
    return jobs


async def test_high_priority_runs_before_normal(hub, make_user, tmp_path):
    _, big = await make_user(groups=["big"])
    _, plain = await make_user()
    _, vip = await make_user(groups=["vip"])
    await _fill_a100(hub, make_user, tmp_path, [big] * 4)
    normal = await submit(hub, plain, profile="gpu", accelerator="a100", gpus=1,
                          command=release_command(tmp_path, "normal"))
    high = await submit(hub, vip, profile="gpu", accelerator="a100", gpus=1, priority="high",
                        command=release_command(tmp_path, "high"))
    assert (await job(hub, vip, high["id"]))["position"] == 1
    assert (await job(hub, plain, normal["id"]))["position"] == 2
    (tmp_path / "hold0").touch()
    await wait_state(hub, vip, high["id"], ("admitted", "running"))
    again = await job(hub, plain, normal["id"])
    assert again["state"] == "queued" and again["position"] == 1, again


async def test_priority_not_permitted_is_403(hub, make_user):
    _, token = await make_user()
    r = await api_request(hub, "crater/jobs", "POST",
                          {"profile": "cpu", "command": "true", "priority": "high"}, token=token)
    assert r.code == 403 and "priority 'high'" in r.data["message"] and "vip" in r.data["message"]


async def test_fair_share_user_with_fewer_gpus_goes_first(hub, make_user, tmp_path):
    _, heavy = await make_user(groups=["big"])
    _, light = await make_user(groups=["big"])
    _, filler = await make_user()
    await _fill_a100(hub, make_user, tmp_path, [heavy, heavy, light, filler])
    first = await submit(hub, heavy, profile="gpu", accelerator="a100", gpus=1,
                         command=release_command(tmp_path, "heavy"))
    later = await submit(hub, light, profile="gpu", accelerator="a100", gpus=1,
                         command=release_command(tmp_path, "light"))
    assert (await job(hub, light, later["id"]))["position"] == 1
    (tmp_path / "hold3").touch()  # the filler's GPU frees
    await wait_state(hub, light, later["id"], ("admitted", "running"))
    assert (await job(hub, heavy, first["id"]))["state"] == "queued"


async def test_waiting_guaranteed_job_preempts_best_effort_jobs(hub, make_user, tmp_path):
    _, scavenger = await make_user()  # quota 2, but best-effort runs beyond it on idle GPUs
    _, owner = await make_user()
    best = [await submit(hub, scavenger, profile="gpu", accelerator="a100", gpus=1,
                         priority="best-effort", command=release_command(tmp_path, f"be{i}"))
            for i in range(4)]
    for model in best:
        await wait_state(hub, scavenger, model["id"], "running")
    wanted = await submit(hub, owner, profile="gpu", accelerator="a100", gpus=2,
                          command=release_command(tmp_path, "wanted"))
    assert wanted["state"] == "queued"
    started = await wait_state(hub, owner, wanted["id"], "running", timeout=60)
    states = [await job(hub, scavenger, m["id"]) for m in best]
    preempted = [s for s in states if s["state"] == "preempted"]
    assert len(preempted) == 2, states  # as few as the 2 GPUs it needs
    assert all(s["reason"] == f"preempted by job {wanted['id']}" for s in preempted)
    assert started["node"] == "gpu-a100-0"


async def test_logs_follow_streams_until_the_job_ends(hub, make_user, tmp_path):
    _, token = await make_user()
    model = await submit(hub, token, profile="cpu", command=release_command(tmp_path, "follow"))
    await wait_state(hub, token, model["id"], "running")
    follow = asyncio.ensure_future(logs(hub, token, model["id"], "?follow=1"))
    (tmp_path / "follow").touch()
    code, content_type, text = await asyncio.wait_for(follow, 60)
    assert code == 200 and content_type.startswith("text/plain")
    assert text == "started follow\nreleased follow\n"
    assert (await job(hub, token, model["id"]))["state"] == "succeeded"


async def test_events_show_transitions_and_kubernetes_events(hub, make_user):
    _, token = await make_user()
    model = await submit(hub, token, profile="cpu", command="echo hi")
    await wait_state(hub, token, model["id"], "succeeded")
    r = await api_request(hub, f"crater/jobs/{model['id']}/events", token=token)
    assert r.code == 200, r
    reasons = [e["reason"] for e in r.data["events"]]
    assert reasons[0] == "queued" and "succeeded" in reasons
    assert "SuccessfulCreate" in reasons  # the Job controller created its pod
    assert all(set(e) == {"type", "reason", "message", "at", "object"} for e in r.data["events"])
    # in the order they happened, though they often share their first second: the hub admits
    # before Kubernetes creates anything, and sees the pod running after the kubelet started it
    # (Kubernetes' own events among themselves may race: the scheduler and the Job controller)
    kube_events = [i for i, e in enumerate(r.data["events"]) if e["object"] != f"crater-job/{model['id']}"]
    assert reasons.index("queued") < reasons.index("admitted") < min(kube_events), reasons
    # an echo may end between two looks of the hub: then there is no "running" transition
    seen = [r for r in ("Started", "running", "succeeded") if r in reasons]
    assert "Started" in seen and [reasons.index(r) for r in seen] == sorted(
        reasons.index(r) for r in seen), reasons


async def test_admin_sees_all_jobs_and_queues_users_only_their_own(hub, make_user, tmp_path):
    name, token = await make_user()
    model = await submit(hub, token, profile="cpu", command=release_command(tmp_path, "q"))
    r = await api_request(hub, "crater/jobs?all=1", token=token)
    assert r.code == 403
    r = await api_request(hub, "crater/queue", token=token)
    assert r.code == 403
    r = await api_request(hub, "crater/queue")  # the test service holds custom:crater:admin
    assert r.code == 200
    ids = [j["id"] for q in r.data["queues"] for j in q["jobs"]]
    assert model["id"] in ids
    r = await api_request(hub, f"crater/jobs/{model['id']}")
    assert r.code == 200 and r.data["owner"] == name
    (tmp_path / "q").touch()
