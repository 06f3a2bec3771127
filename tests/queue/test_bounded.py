"""Bounded work per request, the queue's metrics and a clean stop, on the real hub: job ids out of
range are no job (404, never 500), job lists come in pages without their history unless asked,
a user may follow only so many job logs at once (429 past it), ``/hub/metrics`` carries the
queue's series, and a hub that stops leaves no pending task or open connection behind."""

import asyncio
import re

from tornado.httpclient import AsyncHTTPClient

from ..e2e.hub import api_request
from ..helpers import wait_for
from .conftest import queue_hub
from .helpers import release_command, submit, wait_state


async def test_an_id_out_of_range_is_no_job(hub, make_user):
    _, token = await make_user()
    for path in ("crater/jobs/99999999999999999999", "crater/jobs/2147483648/logs",
                 "crater/jobs/184467440737095516160/events"):
        r = await api_request(hub, path, token=token)
        assert r.code == 404, (path, r)
        assert "No job" in r.data["message"]
        r = await api_request(hub, path)  # the admin too
        assert r.code == 404, (path, r)


async def test_job_lists_come_in_pages_without_history_unless_asked(hub, make_user, tmp_path):
    _, token = await make_user()
    made = [await submit(hub, token, profile="cpu", command=release_command(tmp_path, "pages"))
            for _ in range(3)]
    ids = sorted((m["id"] for m in made), reverse=True)  # newest first
    r = await api_request(hub, "crater/jobs?limit=2", token=token)
    assert r.code == 200, r
    assert [j["id"] for j in r.data["jobs"]] == ids[:2]
    assert r.data["next_offset"] == 2
    assert all("transitions" not in j for j in r.data["jobs"])
    r = await api_request(hub, f"crater/jobs?limit=2&offset={r.data['next_offset']}", token=token)
    assert [j["id"] for j in r.data["jobs"]] == ids[2:]
    assert r.data["next_offset"] is None
    r = await api_request(hub, "crater/jobs?limit=1&transitions=1", token=token)
    assert [t["state"] for t in r.data["jobs"][0]["transitions"]][:1] == ["queued"]
    for bad in ("limit=0", "limit=1001", "limit=x", "offset=-1"):
        r = await api_request(hub, f"crater/jobs?{bad}", token=token)
        assert r.code == 400, (bad, r)
        assert bad.split("=")[0] in r.data["message"]
    (tmp_path / "pages").touch()


async def _open_follow(hub, token, job_id, chunks):
    """A follow request that collects what arrives; returns the response when it ends."""
    return await AsyncHTTPClient().fetch(
        f"{hub.api_url}crater/jobs/{job_id}/logs?follow=1",
        headers={"Authorization": f"token {token}"}, raise_error=False, request_timeout=120,
        streaming_callback=chunks.append)


async def test_a_user_follows_at_most_four_logs_at_once(hub, make_user, tmp_path):
    _, token = await make_user()
    model = await submit(hub, token, profile="cpu", command=release_command(tmp_path, "streams"))
    await wait_state(hub, token, model["id"], "running")
    chunks = [[] for _ in range(4)]
    followers = [asyncio.ensure_future(_open_follow(hub, token, model["id"], c)) for c in chunks]
    await wait_for(lambda: all(chunks), timeout=30, message="four followers to get output")
    r = await api_request(hub, f"crater/jobs/{model['id']}/logs?follow=1", token=token)
    assert r.code == 429, r
    assert "at most 4" in r.data["message"]
    (tmp_path / "streams").touch()
    for follower in followers:
        response = await asyncio.wait_for(follower, 60)
        assert response.code == 200
    assert all(b"".join(c).decode() == "started streams\nreleased streams\n" for c in chunks)
    # the streams are given back: following works again (the job ended: its stored output)
    again = []
    response = await _open_follow(hub, token, model["id"], again)
    assert response.code == 200
    assert b"".join(again).decode() == "started streams\nreleased streams\n"


async def test_metrics_carry_the_queue_series(hub, make_user, tmp_path):
    _, token = await make_user()
    model = await submit(hub, token, profile="cpu", command=release_command(tmp_path, "metrics"))
    await wait_state(hub, token, model["id"], "running")
    r = await AsyncHTTPClient().fetch(hub.api_url.replace("/api/", "/metrics"),
                                      headers={"Authorization": f"token {hub.admin_token}"},
                                      raise_error=False)
    assert r.code == 200, r.body[:500]
    text = r.body.decode()
    running = re.search(r'^crater_jobs\{state="running"\} (\S+)$', text, re.M)
    assert running and float(running.group(1)) >= 1, text[-2000:]
    assert re.search(r"^crater_queue_length \S+$", text, re.M)
    cycles = re.search(r"^crater_queue_cycle_seconds_count (\S+)$", text, re.M)
    assert cycles and float(cycles.group(1)) >= 1
    waited = re.search(r"^crater_job_wait_seconds_count (\S+)$", text, re.M)
    assert waited and float(waited.group(1)) >= 1  # this job waited, then was admitted
    (tmp_path / "metrics").touch()


async def test_a_stopped_hub_leaves_no_pending_task_or_open_connection(
        queue_dir, queue_cluster, tmp_path):
    process = queue_hub(tmp_path / "hub", queue_cluster, f"sqlite:///{tmp_path / 'hub.sqlite'}")
    (tmp_path / "hub").mkdir()
    process.start()
    try:
        r = await api_request(process, "users/stopper", "POST")
        assert r.code == 201, r
        r = await api_request(process, "users/stopper/tokens", "POST", {"note": "stop test"})
        token = r.data["token"]
        model = await submit(process, token, profile="cpu", command=["echo", "hello"])
        await wait_state(process, token, model["id"], "succeeded")
        r = await api_request(process, f"crater/jobs/{model['id']}/events", token=token)
        assert r.code == 200  # the events cache runs too
    finally:
        process.stop()
    assert process.proc.returncode is not None
    log = process.log_file.read_text(errors="replace")
    assert "crater job queue stopped" in log, log[-3000:]
    assert "crater GPU accounting stopped" in log, log[-3000:]  # every started room stops
    assert "crater Ray clusters stopped" in log, log[-3000:]  # with no KubeRay CRD in this cluster
    for warning in ("Task was destroyed but it is pending", "Unclosed client session",
                    "Unclosed connector"):
        assert warning not in log, log[-3000:]
