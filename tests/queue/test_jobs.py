"""The job queue end to end: the real hub on localkube, driven through /hub/api/crater/jobs."""

from ..e2e.hub import api_request
from ..helpers import wait_for
from .helpers import job, logs, submit, wait_state


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
