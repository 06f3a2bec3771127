"""Crash safety: the hub is killed (``os._exit(137)``, what SIGKILL does to it) at each of the 20
fault points of submit, admit, dispatch, run, finish, cancel, preemption, requeue and startup
(:data:`tests.queue.faults.POINTS`, armed by a test-only backend), then restarted without the fault. Every job must end in
the right state, none lost, none run twice: each job appends a line to its own file on the host
when its command starts, so a second run of the same attempt would show.

Each point gets its own hub (its own database) and its own namespace on a localkube of these
tests alone, so no record or Job of one point can be mistaken for another's.
"""

import json
import urllib.request

import pytest
from tornado.httpclient import AsyncHTTPClient

from crater_hub.localkube import LocalKubeProcess

from ..e2e.hub import REPO, Response
from ..helpers import wait_for
from .conftest import queue_hub, share_test_files
from .faults import POINTS

FINAL = ("succeeded", "failed", "cancelled", "preempted")
SUBMIT = ("submit.before_insert", "submit.after_insert")
FLOW = ("admit.before_commit", "admit.after_commit", "dispatch.before_create",
        "dispatch.after_create", "dispatch.after_commit", "running.before_commit",
        "running.after_commit", "finish.before_logs", "finish.after_logs", "finish.after_commit",
        "cleanup.after_delete")
CANCEL = ("cancel.before_commit", "cancel.after_commit")
PREEMPT = ("preempt.after_commit", "requeue.before_commit", "requeue.after_commit")
STARTUP = ("startup.after_migrate", "startup.after_reconcile")


def test_every_fault_point_is_covered():
    assert sorted(SUBMIT + FLOW + CANCEL + PREEMPT + STARTUP) == sorted(POINTS)
    assert len(POINTS) == 20


@pytest.fixture(scope="module")
def crash_cluster(queue_dir, tmp_path_factory):
    cluster = LocalKubeProcess(queue_dir / "crash-localkube", tie_to_parent=True,
                               extra_args=share_test_files(tmp_path_factory)).start(timeout=60)
    yield cluster
    cluster.stop()


def _create_namespace(cluster, name):
    body = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    req = urllib.request.Request(f"{cluster.url}/api/v1/namespaces", data=body.encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req) as r:
        assert r.status == 201


def _pods(cluster, namespace):
    with urllib.request.urlopen(f"{cluster.url}/api/v1/namespaces/{namespace}/pods") as r:
        return json.load(r)["items"]


class Crash:
    """One point's hub, restartable, with the fault armed or not."""

    def __init__(self, root, cluster, point, postgres=None, extra_args=()):
        self.root, self.cluster, self.point = root, cluster, point
        self.namespace = "crash-" + point.replace(".", "-").replace("_", "-")
        if postgres is not None:
            self.url = postgres.createdb(self.namespace.replace("-", "_"))
        else:
            self.url = f"sqlite:///{root / 'hub' / 'jupyterhub.sqlite'}"
        (root / "hub").mkdir(parents=True, exist_ok=True)
        self.extra_args = [f"--Crater.jobs_namespace={self.namespace}",
                           "--Crater.job_queue_backend_class=tests.queue.faults.FaultyEmbeddedBackend",
                           *extra_args]
        self.hub = None

    def start(self, armed):
        env = {"PYTHONPATH": str(REPO)}  # the hub imports the test-only backend from tests/
        if armed:
            env["CRATER_FAULT_POINT"] = f"{self.point}:1"
        old = self.hub
        self.hub = queue_hub(self.root / "hub", self.cluster, self.url, env=env)
        self.hub.extra_args += self.extra_args
        if old is not None:  # same database, same admin token (a service in the config)
            self.hub.admin_token = old.admin_token
        self.hub.start()
        return self.hub

    async def died(self, timeout=60):
        await wait_for(lambda: self.hub.proc.poll() is not None, timeout=timeout,
                       message=f"the hub to die at {self.point}")
        assert self.hub.proc.returncode == 137, self.hub.log_tail()
        assert f"crater fault point {self.point}" in self.hub.log_tail(200)

    async def call(self, path, method="GET", body=None, token=None):
        """An API call that may meet a dying hub: None when the connection failed."""
        try:
            r = await AsyncHTTPClient().fetch(
                self.hub.api_url + path, method=method, raise_error=False, request_timeout=60,
                body=json.dumps(body or {}) if method in ("POST", "PUT", "PATCH") else None,
                headers={"Authorization": f"token {token or self.hub.admin_token}"})
        except Exception:  # refused, reset, closed: the hub is gone
            return None
        if r.code in (502, 503, 599):  # the proxy outlives the hub, and says so
            return None
        return Response(r.code, json.loads(r.body) if r.body else None)


async def _user(crash, name, groups=()):
    r = await crash.call(f"users/{name}", "POST")
    assert r.code in (201, 409), r
    for group in groups:
        await crash.call(f"groups/{group}", "POST")
        await crash.call(f"groups/{group}/users", "POST", {"users": [name]})
    r = await crash.call(f"users/{name}/tokens", "POST", {"note": "crash"})
    return r.data["token"]


def _command(tmp, marker):
    """Appends to runs-<marker> when it starts; ends when release-<marker> exists."""
    return (f"echo run >> {tmp}/runs-{marker}; echo started {marker}; "
            f"while [ ! -e {tmp}/release-{marker} ]; do sleep 0.1; done; echo done {marker}")


def _runs(tmp, marker):
    path = tmp / f"runs-{marker}"
    return len(path.read_text().splitlines()) if path.exists() else 0


async def _all_jobs(crash):
    r = await crash.call("crater/jobs?all=1&transitions=1")
    assert r is not None and r.code == 200, r
    return {job["name"]: job for job in r.data["jobs"]}


async def _settle(crash, tmp, markers):
    """Release every job, wait until all are final and cleaned up (no pod left)."""
    for marker in markers:
        (tmp / f"release-{marker}").touch()

    async def final():
        jobs = await _all_jobs(crash)
        return [jobs] if all(j["state"] in FINAL for j in jobs.values()) else None

    [jobs] = await wait_for(final, timeout=90, interval=0.2, message="every job to end")
    await wait_for(lambda: not _pods(crash.cluster, crash.namespace), timeout=60,
                   message="every job's pod to be gone")
    return jobs


@pytest.mark.parametrize("point", POINTS)
async def test_hub_killed_at_fault_point_loses_nothing_runs_nothing_twice(
        point, queue_dir, crash_cluster, postgres, tmp_path):
    requeue = point.startswith("requeue.")
    crash = Crash(queue_dir / f"crash-{point}", crash_cluster, point, postgres,
                  ["--Crater.job_requeue_preempted=True"] if requeue else [])
    _create_namespace(crash_cluster, crash.namespace)
    crash.start(armed=point not in STARTUP)
    token = await _user(crash, "alice")

    async def submit(marker, **extra):
        body = {"name": marker, "profile": "cpu", "command": _command(tmp_path, marker), **extra}
        return await crash.call("crater/jobs", "POST", body, token=token)

    expected = {}  # job name -> (state, runs)
    if point in SUBMIT:
        r = await submit("job")
        assert r is None, "the hub should have died before answering"
        await crash.died()
        expected = {} if point == "submit.before_insert" else {"job": ("succeeded", 1)}
    elif point in FLOW:
        await submit("job")  # answered or not: the record is committed before any admission
        if point.startswith(("finish.", "cleanup.")):  # the job must end to get there
            await wait_for(lambda: _runs(tmp_path, "job"), timeout=60, message="the job to start")
            (tmp_path / "release-job").touch()
        await crash.died()
        expected = {"job": ("succeeded", 1)}
    elif point in CANCEL:
        r = await submit("job")
        await wait_for(lambda: _runs(tmp_path, "job"), timeout=60, message="the job to start")
        assert await crash.call(f"crater/jobs/{r.data['id']}", "DELETE", token=token) is None
        await crash.died()
        expected = {"job": ("cancelled", 1) if point == "cancel.after_commit"
                    else ("succeeded", 1)}
    elif point in PREEMPT:
        for i in range(4):  # best-effort jobs take every A100, beyond the owner's quota of 2
            await submit(f"be{i}", profile="gpu", accelerator="a100", gpus=1,
                         priority="best-effort")
        await wait_for(lambda: all(_runs(tmp_path, f"be{i}") for i in range(4)), timeout=60,
                       message="the best-effort jobs to start")
        other = await _user(crash, "bob")
        r = await crash.call("crater/jobs", "POST", {
            "name": "wanted", "profile": "gpu", "accelerator": "a100", "gpus": 1,
            "command": _command(tmp_path, "wanted")}, token=other)
        assert r.code == 201, r
        await crash.died()
        expected = {"wanted": ("succeeded", 1)}
    else:  # startup: a running job, an ordinary SIGKILL, then a restart that dies at startup
        await submit("job")
        await wait_for(lambda: _runs(tmp_path, "job"), timeout=60, message="the job to start")
        crash.hub.proc.kill()
        crash.hub.proc.wait()
        try:  # the armed start dies; HubProcess.start may or may not have seen it answer
            crash.start(armed=True)
        except (RuntimeError, TimeoutError):
            pass
        await crash.died()
        expected = {"job": ("succeeded", 1)}

    crash.start(armed=False)
    try:
        markers = list(expected) + ([f"be{i}" for i in range(4)] if point in PREEMPT else [])
        jobs = await _settle(crash, tmp_path, markers)
        for name, (state, runs) in expected.items():
            assert name in jobs, f"job {name} was lost: {jobs}"
            assert jobs[name]["state"] == state, jobs[name]
            assert _runs(tmp_path, name) == runs, f"{name} ran {_runs(tmp_path, name)} times"
            if state == "succeeded":
                assert jobs[name]["exit_code"] == 0
        if point in PREEMPT:
            victims = [jobs[f"be{i}"] for i in range(4)]
            preempted = [v for v in victims if any(t["state"] == "preempted"
                                                   for t in v["transitions"])]
            assert len(preempted) == 1, victims
            for victim in victims:
                # one run per attempt: requeued victims ran again as a new attempt, once
                assert _runs(tmp_path, victim["name"]) == victim["attempt"] + 1, victim
                if not requeue:
                    assert victim["attempt"] == 0
            if requeue:
                assert preempted[0]["attempt"] == 1 and preempted[0]["state"] == "succeeded"
            else:
                assert preempted[0]["state"] == "preempted"
        else:
            assert set(jobs) == set(expected), jobs
    finally:
        crash.hub.stop()
