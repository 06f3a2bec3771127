"""Calls the queue tests make: the jobs API as a user, and waiting on what it reports."""

from tornado.httpclient import AsyncHTTPClient

from ..e2e.hub import api_request
from ..helpers import wait_for

FINAL = ("succeeded", "failed", "cancelled", "preempted")


async def submit(hub, token, **body):
    r = await api_request(hub, "crater/jobs", "POST", body, token=token)
    assert r.code == 201, r
    return r.data


async def job(hub, token, job_id):
    r = await api_request(hub, f"crater/jobs/{job_id}", token=token)
    assert r.code == 200, r
    return r.data


async def wait_state(hub, token, job_id, states, timeout=60):
    """Wait until the job is in one of ``states``; returns its model."""
    states = (states,) if isinstance(states, str) else tuple(states)
    last = {}

    async def reached():
        last["job"] = await job(hub, token, job_id)
        return last["job"] if last["job"]["state"] in states else None

    try:
        return await wait_for(reached, timeout=timeout, interval=0.1,
                              message=f"job {job_id} to be {'/'.join(states)}")
    except AssertionError as e:
        raise AssertionError(f"{e}; last: {last.get('job')}\n{hub.log_tail(30)}") from None


async def logs(hub, token, job_id, query=""):
    r = await AsyncHTTPClient().fetch(
        f"{hub.api_url}crater/jobs/{job_id}/logs{query}",
        headers={"Authorization": f"token {token}"}, raise_error=False, request_timeout=120)
    return r.code, r.headers.get("Content-Type", ""), r.body.decode()


def release_command(flag_dir, name):
    """A shell line that prints, then waits until the test creates ``flag_dir/name``."""
    return (f"echo started {name}; while [ ! -e {flag_dir}/{name} ]; do sleep 0.1; done; "
            f"echo released {name}")
