"""``lifetime: "idle"`` Ray clusters on the real hub and localkube, with real Ray: the hub deletes
an unused cluster after its idle time, warning first; a running Ray job (across a hub restart,
which counts the cluster in the quota at once) and use of the dashboard through the hub's proxy
keep it alive.

One cluster of one T4 worker (so that it holds quota) on a hub of its own whose idle time is
20 s (``Crater.ray_idle_timeout: 20``, warned 12 s before, so from 8 s after the last use; the
reaper looks every 3 s). Timings print as ``RAY-LIFETIME-MEASURE`` lines (``-s``).
"""

import asyncio
import os
import time
from datetime import datetime

import pytest

from crater_hub.client import ray as cray
from tests.helpers import wait_for

from .conftest import crater_file, install_kuberay_crd
from .hub import HubProcess, api_request, request

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="Ray binds wildcard ports: pods need their own network namespace"),
]
ray = pytest.importorskip("ray", reason="the test extra installs ray[default]")
from ray.job_submission import JobStatus, JobSubmissionClient  # noqa: E402

NS = "default"
IDLE, WARNING = 20, 12
USER = "idle-carol"
MEASURE = {}
STATE = {}


@pytest.fixture(scope="module")
def idle_hub(e2e_dir, localkube):
    """A hub with the demo profiles and a 20 s idle time; carol (a token) on it."""
    install_kuberay_crd(localkube)
    process = HubProcess(e2e_dir / "ray-idle-hub", localkube.kubeconfig, slow_spawn_timeout=10,
                         env={"CRATER_CONFIG_FILE": str(crater_file(
                             e2e_dir / "ray-idle.yaml", ray_idle_timeout=IDLE,
                             ray_idle_warning=WARNING, ray_max_lifetime=0))}).start()

    async def token():
        assert (await api_request(process, f"users/{USER}", "POST")).code == 201
        return (await api_request(process, f"users/{USER}/tokens", "POST", {"note": "test"})).data["token"]

    STATE["token"] = asyncio.run(token())
    yield process
    for line in (f"RAY-LIFETIME-MEASURE {k}: {v}" for k, v in MEASURE.items()):
        print(line)
    process.stop()


@pytest.fixture
def core(kube):
    return kube[0]


@pytest.fixture
def custom(kube):
    return kube[1]


async def cluster(hub, name=None, method="GET", body=None):
    path = "crater/ray/clusters" + (f"/{name}" if name else "")
    return await api_request(hub, path, method, body, STATE["token"])


def jobs_client(hub, name):
    return JobSubmissionClient(f"{hub.url}/hub/crater/ray/{name}/dashboard",
                               headers={"Authorization": f"token {STATE['token']}"})


async def stays(hub, name, seconds, message):
    """The cluster exists, unwarned, for ``seconds`` (read through the REST API, which is no
    use of the cluster); returns the last model."""
    deadline = time.monotonic() + seconds
    while True:
        r = await cluster(hub, name)
        assert r.code == 200, f"{message}: the cluster went: {r}"
        assert not r.data["idle_warning"], f"{message}: warned: {r.data}"
        if time.monotonic() > deadline:
            return r.data
        await asyncio.sleep(1)


async def test_an_idle_cluster_is_made_without_a_server_and_says_when_it_goes(idle_hub):
    r = await cluster(idle_hub, method="POST", body={"profile": "cpu", "workers": 0, "lifetime": "idle",
                                                     "server": ""})
    assert r.code == 400 and "server applies to lifetime 'server' only" in r.data["message"], r
    r = await cluster(idle_hub, method="POST", body={"profile": "cpu", "workers": 0, "lifetime": "sometimes"})
    assert r.code == 400 and "lifetime must be one of: server, idle" in r.data["message"], r
    began = time.monotonic()
    made = await asyncio.to_thread(  # the notebook client, as a notebook would call it
        cray.new_cluster, workers=1, accelerator="t4", gpus=1, profile="gpu", name="idle",
        lifetime="idle", api_url=idle_hub.api_url, token=STATE["token"])
    name = STATE["name"] = made.name
    assert made.info["lifetime"] == "idle" and made.expires_at and not made.idle_warning, made.info
    assert f"deleted at {made.expires_at} unless used" in repr(made)

    async def ready():
        got = (await cluster(idle_hub, name)).data
        return got if got["state"] == "ready" else None

    # a starting cluster is not idle: it outlives its idle time while its head starts
    model = await wait_for(ready, timeout=240, interval=1, message="the Ray cluster to be ready")
    MEASURE["create_to_ready_s"] = round(time.monotonic() - began, 1)
    assert model["expires_because"] == "idle" and model["token"], model


async def gpus_left(hub):
    """What the profiles API (no Ray call) says is left of carol's GPU quota (4)."""
    r = await api_request(hub, "crater/profiles", token=STATE["token"])
    assert r.code == 200, r
    return r.data["quota"]["gpus"]


async def test_a_running_job_keeps_it_alive_past_its_idle_time_across_a_hub_restart(idle_hub):
    name = STATE["name"]
    assert await gpus_left(idle_hub) == 3  # the cluster's T4 worker counts
    jobs = jobs_client(idle_hub, name)
    # long enough to outlast the restart, the new hub's first look and a full idle time after it
    job_id = await asyncio.to_thread(jobs.submit_job, entrypoint="sleep 75")
    # a restarted hub counts the cluster at once (its watch cache starts with the hub, not on
    # the first Ray call) and its reaper finds the running job
    began = time.monotonic()
    idle_hub.restart()
    await wait_for(lambda: _equals(gpus_left(idle_hub), 3), timeout=20, interval=0.2,
                   message="the restarted hub to count the cluster in the quota")
    MEASURE["restart_to_ledger_s"] = round(time.monotonic() - began, 1)
    log = idle_hub.log_file.read_text(errors="replace")
    assert "crater Ray clusters stopped" in log and "Task was destroyed but it is pending" not in log

    async def job_seen():  # the new hub's reaper saw the job: the deadline is a full idle time away
        got = (await cluster(idle_hub, name)).data
        deadline = datetime.fromisoformat(got["idle_deadline"].replace("Z", "+00:00")).timestamp()
        return not got["idle_warning"] and deadline >= time.time() + IDLE - 5

    await wait_for(job_seen, timeout=15, interval=0.5, message="the new hub to see the running job")
    # no request through the proxy from here: only the running job keeps it
    await stays(idle_hub, name, IDLE + 10, "with a running job")

    async def finished():
        status = await asyncio.to_thread(jobs.get_job_status, job_id)
        return status if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED) else None

    assert await wait_for(finished, timeout=90, interval=2, message="the job to end") == JobStatus.SUCCEEDED


async def test_dashboard_use_through_the_hub_keeps_it_alive(idle_hub, custom):
    name = STATE["name"]
    url = f"{idle_hub.url}/hub/crater/ray/{name}/dashboard/api/version"
    deadline = time.monotonic() + IDLE + 10
    while time.monotonic() < deadline:
        r = await request(url, token=STATE["token"])
        assert r.code == 200 and r.data["ray_version"], r
        got = (await cluster(idle_hub, name)).data
        assert got["state"] == "ready" and not got["idle_warning"], got
        await asyncio.sleep(4)
    # the last use is on the RayCluster, for a restarted hub to continue the count
    rc = await custom.get_namespaced_custom_object("ray.io", "v1", NS, "rayclusters", name)
    stored = rc["metadata"]["annotations"]["crater.io/last-activity"]
    assert time.time() - datetime.fromisoformat(stored.replace("Z", "+00:00")).timestamp() < IDLE, stored


async def test_unused_it_is_warned_then_deleted_with_its_pods(idle_hub, core):
    name = STATE["name"]
    last_use = time.monotonic()  # the last proxy request was the previous test's
    model = await wait_for(lambda: _warned(idle_hub, name), timeout=IDLE + 15, interval=0.5,
                           message="the idle warning")
    warned_after = time.monotonic() - last_use
    MEASURE["warned_after_last_use_s"] = round(warned_after, 1)
    assert IDLE - WARNING - 4 <= warned_after, model  # not before the warning time
    assert model["expires_because"] == "idle" and model["state"] == "ready", model
    listed = (await cluster(idle_hub)).data["clusters"]
    assert [(c["name"], c["idle_warning"]) for c in listed] == [(name, True)]

    async def gone():
        pods = [p for p in (await core.list_namespaced_pod(NS, label_selector=f"ray.io/cluster={name}")).items
                if not p.metadata.deletion_timestamp]
        return (await cluster(idle_hub, name)).code == 404 and not pods

    await wait_for(gone, timeout=IDLE + 60, interval=1, message="the idle cluster to be deleted")
    deleted_after = time.monotonic() - last_use
    MEASURE["deleted_after_last_use_s"] = round(deleted_after, 1)
    assert deleted_after >= IDLE - 4  # not before its idle time
    assert "deleting it (idle since" in idle_hub.log_file.read_text(errors="replace")


async def _equals(awaitable, expected):
    return await awaitable == expected


async def _warned(hub, name):
    r = await cluster(hub, name)
    assert r.code == 200, f"deleted before a warning: {r}"
    return r.data if r.data["idle_warning"] else None
