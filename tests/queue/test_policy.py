"""One policy for servers and jobs, on the real hub and localkube (``crater-queue.yaml``: a
2-GPU, 3-server quota; an ``h100`` offered that no node has; a ``team`` profile with image choices
and an image pattern).

What a user sees: a job holding the quota refuses a GPU server and a server holding it makes a
job wait, and the profiles API counts both; a job that could never run is refused at submit;
images come from the allow-list on both paths; the platform's environment names are refused; a
refused named spawn leaves no server, unless it ran before (then it and its home stay); and
concurrent spawns and submits of one user never hold more GPUs than the quota, counted from the
pods.
"""

import asyncio

import pytest
from kubernetes_asyncio import client

from tests.localkube_api import api_client

from ..e2e.hub import api_request, request_spawn, server_of, spawn, stop_all_servers, stop_server
from ..helpers import wait_for
from .helpers import FINAL, job, release_command, submit, wait_state

T4 = {"profile": "gpu", "accelerator": "t4"}


@pytest.fixture
async def core(queue_cluster):
    """A CoreV1Api on the test cluster, to read what a user cannot see through the hub."""
    async with api_client(queue_cluster.kubeconfig) as api:
        yield client.CoreV1Api(api)


@pytest.fixture
def pods(core):
    """``await pods()``: every pod of the cluster, read from the API."""
    async def read():
        return (await core.list_pod_for_all_namespaces()).items
    return read


def gpus_held_by(all_pods, user):
    """GPUs requested by ``user``'s servers and jobs that have not ended, from their pods."""
    total = 0
    for pod in all_pods:
        notes = pod.metadata.annotations or {}
        if user not in (notes.get("hub.jupyter.org/username"), notes.get("crater.io/owner-name")):
            continue
        if pod.status.phase in ("Succeeded", "Failed"):
            continue
        for container in pod.spec.containers:
            total += int(((container.resources and container.resources.requests) or {})
                         .get("nvidia.com/gpu", 0))
    return total


async def remaining_gpus(hub, token):
    r = await api_request(hub, "crater/profiles", token=token)
    assert r.code == 200, r
    return r.data["quota"]["gpus"]


async def submit_refused(hub, token, **body):
    r = await api_request(hub, "crater/jobs", "POST", {"command": "true", **body}, token=token)
    assert 400 <= r.code < 500, r
    return r.code, r.data["message"]


async def test_a_job_holding_the_quota_refuses_a_gpu_server_and_a_server_holding_it_makes_a_job_wait(
        hub, make_user, tmp_path):
    name, token = await make_user()
    try:
        held = await submit(hub, token, **T4, gpus=2, command=release_command(tmp_path, "held"))
        await wait_state(hub, token, held["id"], "running")
        assert await remaining_gpus(hub, token) == 0
        r = await request_spawn(hub, name, {**T4, "gpus": 1})
        assert r.code == 403, r
        assert "Over quota" in r.data["message"] and "2 of 2 in use" in r.data["message"]
        assert await server_of(hub, name) is None

        (tmp_path / "held").touch()
        assert (await wait_state(hub, token, held["id"], FINAL))["state"] == "succeeded"
        assert await remaining_gpus(hub, token) == 2
        await spawn(hub, name, {**T4, "gpus": 2})
        assert await remaining_gpus(hub, token) == 0
        waiting = await submit(hub, token, **T4, gpus=1, command="echo ran")
        model = await wait_for(lambda: _waiting(hub, token, waiting["id"]), timeout=30,
                               message="the job to wait for its owner's quota")
        assert model["state"] == "queued" and "quota" in model["waiting"], model
        await stop_server(hub, name)
        assert (await wait_state(hub, token, waiting["id"], FINAL))["state"] == "succeeded"
    finally:
        await stop_all_servers(hub, name)


async def _waiting(hub, token, job_id):
    model = await job(hub, token, job_id)
    return model if model["waiting"] else None


async def test_a_job_that_could_never_run_is_refused_at_submit(hub, make_user):
    _, token = await make_user()
    code, message = await submit_refused(hub, token, **T4, gpus=4)
    assert code == 403 and "4 GPUs is more than your GPU quota of 2" in message
    code, message = await submit_refused(hub, token, **T4, gpus=16, priority="best-effort")
    assert code == 400 and "more than any node holds" in message and "at most 8" in message
    code, message = await submit_refused(hub, token, profile="gpu", accelerator="h100", gpus=1)
    assert code == 400 and message.startswith("accelerator: No node in the cluster offers NVIDIA H100")
    r = await api_request(hub, "crater/jobs", token=token)
    assert r.data["jobs"] == []  # nothing was queued


async def test_images_come_from_the_allow_list_on_both_paths(hub, make_user, pods):
    name, token = await make_user()
    try:
        outside = {"profile": "team", "image": "docker.io/evil/miner:1"}
        r = await request_spawn(hub, name, outside)
        assert r.code == 400 and "image 'docker.io/evil/miner:1' is not allowed" in r.data["message"], r
        code, message = await submit_refused(hub, token, **outside)
        assert code == 400 and "allowed: one of sample or an image matching 'quay.io/jupyter/base-*'" \
            in message

        restricted = {"profile": "team", "image": "vip-only"}
        r = await request_spawn(hub, name, restricted)
        assert r.code == 403 and "restricted to members of vip" in r.data["message"], r
        code, message = await submit_refused(hub, token, **restricted)
        assert code == 403 and "restricted to members of vip" in message

        pattern = "quay.io/jupyter/base-notebook:2025-01-06"
        await spawn(hub, name, {"profile": "team", "image": pattern})
        server_pods = [p for p in await pods()
                       if (p.metadata.annotations or {}).get("hub.jupyter.org/username") == name]
        assert [c.image for p in server_pods for c in p.spec.containers] == [pattern]
        ran = await submit(hub, token, profile="team", image=pattern, command="echo from-pattern")
        done = await wait_state(hub, token, ran["id"], FINAL)
        assert done["state"] == "succeeded" and done["image"] == pattern, done
    finally:
        await stop_all_servers(hub, name)


@pytest.mark.parametrize("variable", ["NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES",
                                      "JUPYTERHUB_API_TOKEN"])
async def test_environment_names_the_platform_owns_are_refused(hub, make_user, variable):
    _, token = await make_user()
    code, message = await submit_refused(hub, token, profile="cpu", env={variable: "all"})
    assert code == 400 and f"env name {variable!r} is reserved" in message


async def test_a_refused_named_spawn_leaves_no_server_and_logs_one_line(hub, make_user):
    name, _ = await make_user()
    for server, options, status in [("bad", {"profile": "nope"}, 400),
                                    ("greedy", {**T4, "gpus": 4}, 403)]:
        r = await request_spawn(hub, name, options, server=server)
        assert r.code == status, r

    async def none_left():
        r = await api_request(hub, f"users/{name}?include_stopped_servers=1")
        return not {"bad", "greedy"} & set(r.data["servers"])

    await wait_for(none_left, timeout=10, message="the refused named servers to be removed")
    log = hub.log_file.read_text(errors="replace").splitlines()
    refused = [i for i, line in enumerate(log) if f"Not starting {name}'s server" in line
               or f"Error starting {name}'s server" in line]
    assert len(refused) == 2, "\n".join(log[-40:])
    assert all(not log[i + 1].startswith("Traceback") for i in refused if i + 1 < len(log))
    assert not [line for line in log if "unhandled user_options" in line]


@pytest.fixture
def claims(core):
    """``await claims()``: the names of the servers' namespace's PVCs, read from the API."""
    async def read():
        return {c.metadata.name for c in
                (await core.list_namespaced_persistent_volume_claim("default")).items}
    return read


async def test_a_refused_spawn_of_a_server_that_ran_before_keeps_the_server_and_its_home(
        hub, make_user, claims, tmp_path):
    """A named server that was started and stopped is the user's: when a job has since taken the
    quota and its next spawn is refused, its record and its home PVC stay (only a server whose
    first spawn is refused is removed, as a new one refused below is)."""
    name, token = await make_user()
    try:
        before = await claims()
        await spawn(hub, name, {"profile": "cpu"}, server="keep")
        await stop_server(hub, name, "keep")
        [home] = [c for c in await claims() - before if name in c and "keep" in c]
        held = await submit(hub, token, **T4, gpus=2, command=release_command(tmp_path, "held"))
        await wait_state(hub, token, held["id"], "running")

        r = await request_spawn(hub, name, {**T4, "gpus": 1}, server="keep")
        assert r.code == 403 and "Over quota" in r.data["message"], r
        r = await request_spawn(hub, name, {**T4, "gpus": 1}, server="fresh")
        assert r.code == 403, r

        async def servers():
            r = await api_request(hub, f"users/{name}?include_stopped_servers=1")
            return set(r.data["servers"])

        # the removals of refused servers have run once the later one's is done
        await wait_for(lambda: _lacks(servers, "fresh"), timeout=10,
                       message="the new refused server to be removed")
        assert "keep" in await servers()
        assert home in await claims()
        log = hub.log_file.read_text(errors="replace")
        assert f"removed {name}'s server 'keep'" not in log
    finally:
        (tmp_path / "held").touch()
        await stop_all_servers(hub, name)


async def _lacks(read, server):
    return server not in await read()


async def test_concurrent_spawns_and_submits_never_hold_more_gpus_than_the_quota(
        hub, make_user, pods, tmp_path):
    name, token = await make_user()  # 2 GPUs, 3 servers
    try:
        spawns = [request_spawn(hub, name, {**T4, "gpus": 1}, server=f"s{i}") for i in range(3)]
        submits = [api_request(hub, "crater/jobs", "POST",
                               {**T4, "gpus": 1, "command": release_command(tmp_path, f"j{i}")},
                               token=token) for i in range(3)]
        answers = await asyncio.gather(*spawns, *submits)
        assert {r.code for r in answers[:3]} <= {201, 202, 403}, answers
        assert {r.code for r in answers[3:]} == {201}, answers
        jobs = [r.data["id"] for r in answers[3:]]
        peak = 0

        async def settled():
            nonlocal peak
            held = gpus_held_by(await pods(), name)
            peak = max(peak, held)
            user = (await api_request(hub, f"users/{name}")).data
            pending = any(s.get("pending") for s in user["servers"].values())
            models = [await job(hub, token, j) for j in jobs]
            starting = any(m["state"] == "admitted" for m in models)
            return held if held == 2 and not pending and not starting else None

        assert await wait_for(settled, timeout=60, interval=0.2,
                              message="the quota to be used by servers and jobs") == 2
        for _ in range(10):  # and it stays so while everything holds
            peak = max(peak, gpus_held_by(await pods(), name))
            await asyncio.sleep(0.1)
        assert peak <= 2
        assert await remaining_gpus(hub, token) == 0
    finally:
        for i in range(3):
            (tmp_path / f"j{i}").touch()
        await stop_all_servers(hub, name)


async def test_after_a_hub_restart_a_running_server_still_holds_its_gpus(hub, make_user):
    """The ledger lives in memory: JupyterHub polls every server as it starts again, which
    restores what each holds, before the queue admits anything."""
    name, token = await make_user()
    try:
        await spawn(hub, name, {**T4, "gpus": 2})
        hub.restart()
        assert await remaining_gpus(hub, token) == 0
        waiting = await submit(hub, token, **T4, gpus=1, command="echo ran")
        model = await wait_for(lambda: _waiting(hub, token, waiting["id"]), timeout=30,
                               message="the job to wait for its owner's quota")
        assert "quota" in model["waiting"], model
        await stop_server(hub, name)
        assert (await wait_state(hub, token, waiting["id"], FINAL))["state"] == "succeeded"
    finally:
        await stop_all_servers(hub, name)
