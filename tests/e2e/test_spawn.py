"""What a user of the real hub on localkube sees: spawning, reaching, stopping, isolation, recovery."""

import asyncio
import os
import re
import shutil
import signal
import subprocess

import pytest

from ..helpers import wait_for
from .hub import api_request, processes_mentioning, request, server_of, spawn, stop_server


async def user_token(hub, user):
    r = await api_request(hub, f"users/{user}/tokens", "POST", {"note": "e2e"})
    assert r.code == 201, r
    return r.data["token"]


async def status_through_proxy(hub, user, token):
    """``GET /user/<user>/api/status`` through the public proxy, as the user's browser or client."""
    return await request(f"{hub.url}/user/{user}/api/status", token=token)


async def pod_of(hub, core, user):
    """The pod behind ``user``'s server, as named in the spawner state the hub keeps."""
    server = await server_of(hub, user)
    return await core.read_namespaced_pod(server["state"]["pod_name"], "default")


async def test_user_created_through_api_spawns_and_is_reachable(hub, make_user, spawn_times):
    user = await make_user("alice")

    started = await spawn(hub, user)
    spawn_times.append(started.seconds)
    print(f"spawn wall time: {started.seconds:.2f}s")

    messages = [event.get("message", "") for event in started.events]
    assert any("Successfully assigned default/" in m for m in messages), messages  # scheduler
    assert any("Started container notebook" in m for m in messages), messages  # kubelet
    assert (await server_of(hub, user))["ready"] is True
    r = await status_through_proxy(hub, user, await user_token(hub, user))
    assert r.code == 200 and "last_activity" in r.data, r


async def test_stop_removes_the_pod(hub, make_user, core, spawn_times):
    user = await make_user("stopper")
    spawn_times.append((await spawn(hub, user)).seconds)
    pod = await pod_of(hub, core, user)
    assert pod.status.phase == "Running"

    await stop_server(hub, user)

    async def pod_gone():
        pods = await core.list_namespaced_pod(
            "default", field_selector=f"metadata.name={pod.metadata.name}"
        )
        return not pods.items

    await wait_for(pod_gone, timeout=30, message=f"pod {pod.metadata.name} to be deleted")


async def test_two_users_get_two_pods_and_cannot_use_each_others_server(
    hub, make_user, core, spawn_times
):
    a, b = await make_user("ann"), await make_user("bob")
    for started in await asyncio.gather(spawn(hub, a), spawn(hub, b)):
        spawn_times.append(started.seconds)

    pod_a, pod_b = await pod_of(hub, core, a), await pod_of(hub, core, b)
    assert pod_a.metadata.name != pod_b.metadata.name
    assert pod_a.status.pod_ip != pod_b.status.pod_ip
    token_a = await user_token(hub, a)
    assert (await status_through_proxy(hub, a, token_a)).code == 200
    assert (await status_through_proxy(hub, b, token_a)).code == 403


async def test_hub_restart_keeps_running_servers_reachable(hub, make_user, core, spawn_times):
    user = await make_user("steady")
    spawn_times.append((await spawn(hub, user)).seconds)
    token = await user_token(hub, user)
    pod_before = await pod_of(hub, core, user)

    await asyncio.to_thread(hub.restart)  # cleanup_servers=False: the pod is left running

    assert (await server_of(hub, user))["ready"] is True
    assert (await status_through_proxy(hub, user, token)).code == 200
    assert (await pod_of(hub, core, user)).metadata.uid == pod_before.metadata.uid


def listening_pids(pod, port):
    """PIDs of the processes listening on ``port`` in ``pod`` (the server inside it).

    Loopback pods share the host's network: what listens on the pod's address. Isolated pods
    have a network namespace of their own: what listens on the port there, seen by entering it
    through one of the pod's processes (found by the kubelet's container marker).
    """
    if shutil.which("ss") is None:
        pytest.fail("this test needs ss: install the Debian package iproute2 (./dev test does, as root)")
    ip = pod.status.pod_ip
    if ip.startswith("127."):
        command = ["ss", "-Hltnp", "src", f"{ip}:{port}"]
    else:
        sandbox = f"/pods/{pod.metadata.namespace}_{pod.metadata.name}_{pod.metadata.uid[:8]}/"
        inside = processes_mentioning(sandbox)
        assert inside, f"no process of pod {pod.metadata.name}"
        command = ["nsenter", "-t", str(inside[0]), "-n", "ss", "-Hltnp", "sport", "=", f":{port}"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}


async def test_server_whose_process_is_killed_is_noticed(hub, make_user, core, spawn_times):
    """SIGTERM ends the server cleanly, so (restartPolicy OnFailure) the pod completes.

    A SIGKILL would make the kubelet restart the container instead, as on a real cluster, and the
    hub would rightly keep the server.
    """
    user = await make_user("doomed")
    spawn_times.append((await spawn(hub, user)).seconds)
    pod = await pod_of(hub, core, user)
    pids = listening_pids(pod, 8888)
    assert pids, f"nothing listens on {pod.status.pod_ip}:8888"

    for pid in pids:
        os.kill(pid, signal.SIGTERM)

    await wait_for(
        lambda: _gone(hub, user), timeout=30, message=f"the hub to notice {user}'s server died"
    )
    token = await user_token(hub, user)
    assert (await status_through_proxy(hub, user, token)).code == 302  # no route: to the hub
    r = await request(f"{hub.url}/hub/user/{user}/api/status", token=token)
    assert r.code == 424 and "no longer running" in r.data["message"], r


async def _gone(hub, user):
    return await server_of(hub, user) is None
