"""GPU accounting on the real hub and localkube: a 2-GPU job's GPU-hours match its measured run,
an interval that ended while the hub was down closes at the pod's real ``finishedAt``, and the
CSV export, the JSON report and the My usage page say the same.

Own localkube and hub (the queue tests' settings: ``tests/queue/crater-queue.yaml``), the jobs'
database on SQLite, or PostgreSQL with ``QUEUE_DB=postgresql``.
"""

import asyncio
import csv
import io
import json
import os
import time
import urllib.request
from datetime import datetime, timezone

import pytest
from tornado.httpclient import AsyncHTTPClient

from crater_hub.localkube import LocalKubeProcess

from ..e2e.hub import api_request
from ..helpers import wait_for
from ..queue.conftest import queue_hub, share_test_files
from ..queue.helpers import submit, wait_state
from ..queue.postgres import PostgresServer


def ts(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def usage_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("usage")


@pytest.fixture(scope="module")
def cluster(usage_dir, tmp_path_factory):
    cluster = LocalKubeProcess(usage_dir / "localkube", tie_to_parent=True,
                               extra_args=share_test_files(tmp_path_factory)).start(timeout=60)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def database_url(usage_dir):
    if os.environ.get("QUEUE_DB", "sqlite") != "postgresql":
        yield f"sqlite:///{usage_dir / 'hub' / 'jupyterhub.sqlite'}"
        return
    server = PostgresServer(usage_dir / "postgres").start()
    yield server.url("crater")
    server.stop()


@pytest.fixture(scope="module")
def hub(usage_dir, cluster, database_url):
    (usage_dir / "hub").mkdir(exist_ok=True)
    process = queue_hub(usage_dir / "hub", cluster, database_url).start()
    yield process
    process.stop()


async def make_user(hub, name):
    r = await api_request(hub, f"users/{name}", "POST")
    assert r.code in (201, 409), r
    r = await api_request(hub, f"users/{name}/tokens", "POST", {"note": "usage tests"})
    assert r.code == 201, r
    return r.data["token"]


def watch_until_terminated(cluster, job_id, timeout):
    """Follow the job's pod with a WATCH (no state is missed, not even one the hub deletes at once)
    until its container has terminated; (startedAt, finishedAt) as epoch seconds."""
    url = (f"{cluster.url}/api/v1/pods?watch=true&timeoutSeconds={timeout}"
           f"&labelSelector=crater.io/job-id%3D{job_id}")
    with urllib.request.urlopen(url, timeout=timeout + 10) as stream:
        for line in stream:
            times = container_times(json.loads(line).get("object"))
            if times:
                return times
    raise AssertionError(f"job {job_id}'s container did not end within {timeout}s")


def container_times(pod):
    """(startedAt, finishedAt) of the pod's terminated container, as epoch seconds, or None."""
    for cs in (pod or {}).get("status", {}).get("containerStatuses") or ():
        term = (cs.get("state") or {}).get("terminated")
        if term:
            return ts(term["startedAt"]), ts(term["finishedAt"])
    return None


async def closed_intervals(hub, token, job_id):
    r = await api_request(hub, f"crater/usage/timeline?kind=job&name={job_id}", token=token)
    if r.code != 200 or not r.data["intervals"] or r.data["intervals"][0]["end"] is None:
        return None
    return r.data


async def test_two_gpu_job_gpu_hours_match_its_run_and_csv_matches(hub, cluster):
    token = await make_user(hub, "acct-ann")
    model = await submit(hub, token, profile="gpu", accelerator="a100", gpus=2, command="sleep 3")
    started, finished = await asyncio.to_thread(watch_until_terminated, cluster, model["id"], 120)
    assert finished - started >= 3
    await wait_state(hub, token, model["id"], "succeeded")
    timeline = await wait_for(lambda: closed_intervals(hub, token, model["id"]), timeout=30,
                              interval=0.2, message="the job's interval to close")
    (interval,) = timeline["intervals"]
    assert interval["count"] == 2 and interval["gpus"] == 2 and not interval["end_estimated"]
    assert timeline["available"] is False and "not configured" in timeline["note"]

    r = await api_request(hub, "crater/usage?by=user", token=token)
    assert r.code == 200, r
    (mine,) = r.data["rows"]  # a user sees only their own numbers
    assert mine["name"] == "acct-ann"
    # 2 GPUs × the measured run, within one second per GPU
    assert abs(mine["gpu_hours"] * 3600 - 2 * (finished - started)) <= 2.0
    assert mine["kinds"]["job"] == mine["gpu_hours"]

    # the admin's CSV parses and says what the admin's JSON says
    r = await api_request(hub, "crater/usage?by=user")
    rows = {row["name"]: row for row in r.data["rows"]}
    body = (await AsyncHTTPClient().fetch(
        f"{hub.api_url}crater/usage?by=user&format=csv",
        headers={"Authorization": f"token {hub.admin_token}"})).body.decode()
    parsed = list(csv.DictReader(io.StringIO(body)))
    assert {row["name"]: float(row["gpu_hours"]) for row in parsed} == \
        {name: row["gpu_hours"] for name, row in rows.items()}
    assert float(next(p for p in parsed if p["name"] == "acct-ann")["job_hours"]) == mine["gpu_hours"]

    # bad input: 400 naming the field
    for query, field in (("start=yesterday", "start"), ("by=team", "by"), ("format=xml", "format")):
        r = await api_request(hub, f"crater/usage?{query}", token=token)
        assert r.code == 400 and field in r.data["message"], r


async def test_a_job_that_ended_while_the_hub_was_down_closes_at_its_finished_at(hub, cluster):
    token = await make_user(hub, "acct-bob")
    model = await submit(hub, token, profile="gpu", accelerator="a100", gpus=2, command="sleep 4")
    await wait_state(hub, token, model["id"], "running")
    await wait_for(lambda: api_request(hub, f"crater/usage/timeline?kind=job&name={model['id']}",
                                       token=token), timeout=30, message="the interval to open")
    hub.stop()
    try:
        times = await asyncio.to_thread(watch_until_terminated, cluster, model["id"], 60)
        # the restart is clearly later than the end
        await wait_for(lambda: time.time() > times[1] + 2, timeout=10, interval=0.1)
    finally:
        hub.start()
    timeline = await wait_for(lambda: closed_intervals(hub, token, model["id"]), timeout=60,
                              interval=0.2, message="the interval to close after the restart")
    (interval,) = timeline["intervals"]
    assert abs(ts(interval["end"]) - times[1]) < 0.01, (interval, times)
    assert abs(ts(interval["start"]) - times[0]) < 0.01 and not interval["end_estimated"]
    r = await api_request(hub, "crater/usage?by=user", token=token)
    (mine,) = r.data["rows"]
    assert abs(mine["gpu_hours"] * 3600 - 2 * (times[1] - times[0])) <= 2.0
    assert datetime.now(timezone.utc).timestamp() - times[1] > 2
