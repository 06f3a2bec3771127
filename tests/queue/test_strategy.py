"""Crater.job_queueing_strategy end to end, on the real hub and localkube (issue 10, (f)).

A user with the default quota (2 GPUs) holds 1 T4 with a running job, then submits a 2 × T4 job,
which must wait for their quota (1 + 2 > 2), and then a 1 × T4 job, which fits it (1 + 1 = 2); the
T4 node has room for both. Under ``best_effort_fifo`` (the session's hub) the later job runs
first; under ``strict_fifo`` (a second hub on the same cluster, its jobs in a namespace of their
own) it waits behind the earlier one, and runs after it.
"""

import itertools
import json
import urllib.error
import urllib.request

import pytest

from ..e2e.hub import api_request
from ..helpers import wait_for
from .conftest import queue_hub
from .helpers import FINAL, job, release_command, submit, wait_state

NAMESPACE = "strict-fifo-jobs"
_numbers = itertools.count()


def _create_namespace(cluster):
    request = urllib.request.Request(
        f"{cluster.url}/api/v1/namespaces", method="POST",
        data=json.dumps({"metadata": {"name": NAMESPACE}}).encode(),
        headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request).close()
    except urllib.error.HTTPError as e:
        if e.code != 409:
            raise


@pytest.fixture(scope="module")
def strict_hub(queue_dir, queue_cluster, postgres):
    _create_namespace(queue_cluster)
    state = queue_dir / "strict-hub"
    state.mkdir(exist_ok=True)
    database = postgres.createdb("crater_strict") if postgres is not None else \
        f"sqlite:///{state / 'jupyterhub.sqlite'}"
    process = queue_hub(state, queue_cluster, database)
    process.extra_args += ["--Crater.job_queueing_strategy=strict_fifo",
                           f"--Crater.jobs_namespace={NAMESPACE}"]
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def strict_user(strict_hub):
    name = f"strict-user-{next(_numbers)}"
    r = await api_request(strict_hub, f"users/{name}", "POST")
    assert r.code == 201, r
    r = await api_request(strict_hub, f"users/{name}/tokens", "POST", {"note": "strategy tests"})
    assert r.code == 201, r
    yield r.data["token"]
    r = await api_request(strict_hub, "crater/jobs?all=1&state=queued&state=admitted&state=running")
    for model in r.data["jobs"] if r.code == 200 else ():
        if model["owner"] == name:
            await api_request(strict_hub, f"crater/jobs/{model['id']}", "DELETE")


async def _holding_one_then_two_and_one(hub, token, flags):
    """The user's running 1 × T4 job, then their 2 × T4 and 1 × T4 jobs (submitted in order)."""
    holder = await submit(hub, token, profile="gpu", accelerator="t4", gpus=1,
                          command=release_command(flags, "holder"))
    await wait_state(hub, token, holder["id"], "running")
    big = await submit(hub, token, profile="gpu", accelerator="t4", gpus=2,
                       command=release_command(flags, "big"))
    small = await submit(hub, token, profile="gpu", accelerator="t4", gpus=1,
                         command=release_command(flags, "small"))
    return holder, big, small


async def test_best_effort_fifo_runs_the_later_job_that_fits_the_quota_first(hub, make_user,
                                                                             tmp_path):
    _, token = await make_user()  # default quota: 2 GPUs
    holder, big, small = await _holding_one_then_two_and_one(hub, token, tmp_path)
    await wait_state(hub, token, small["id"], "running")
    waiting = await job(hub, token, big["id"])
    assert waiting["state"] == "queued", waiting
    # (1 or 2 of 2 in use: the cycle that admitted the small job looked at the big one first)
    assert waiting["waiting"].startswith("over quota: 2 more GPUs would exceed your GPU quota"), \
        waiting
    assert waiting["estimated_start"] is not None  # once the holder and the small job end
    (tmp_path / "holder").touch()
    (tmp_path / "small").touch()
    running = await wait_state(hub, token, big["id"], "running")
    (tmp_path / "big").touch()
    assert (await wait_state(hub, token, big["id"], FINAL))["state"] == "succeeded"
    done = await job(hub, token, small["id"])
    assert done["state"] == "succeeded" and done["started"] < running["started"]


async def test_strict_fifo_starts_the_owners_jobs_in_submission_order(strict_hub, strict_user,
                                                                      tmp_path):
    hub, token = strict_hub, strict_user
    holder, big, small = await _holding_one_then_two_and_one(hub, token, tmp_path)
    behind = f"behind job {big['id']} of the same user (over quota)"

    async def decided_to_wait():
        model = await job(hub, token, small["id"])
        return model if model["waiting"] and model["waiting"].startswith(behind) else None

    # the engine looked at the small job and held it back, though the quota had room for it
    held = await wait_for(decided_to_wait, timeout=30, message="the small job to wait behind")
    assert held["state"] == "queued" and held["estimated_start"] is not None, held
    first = await job(hub, token, big["id"])
    assert first["state"] == "queued" and first["waiting"].startswith("over quota: 2 more GPUs")
    assert held["estimated_start"] >= first["estimated_start"]
    (tmp_path / "holder").touch()
    running = await wait_state(hub, token, big["id"], "running")
    still = await job(hub, token, small["id"])  # now the big job holds the quota
    assert still["state"] == "queued" and still["waiting"].startswith("over quota: 1 more GPU")
    (tmp_path / "big").touch()
    later = await wait_state(hub, token, small["id"], "running")
    assert later["started"] > running["started"]
    (tmp_path / "small").touch()
    assert (await wait_state(hub, token, small["id"], FINAL))["state"] == "succeeded"
