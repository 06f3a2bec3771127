"""GPU-aware spawning on the real hub with the demo profiles, on localkube's demo cluster.

What a researcher sees through JupyterHub's own REST API (the form has its browser tests): the
GPUs they ask for are the GPUs their pod gets and the capacity API counts; quotas hold across
named servers and against concurrent spawns; profiles limited to a group stay out of reach; bad
options and refusals leave nothing behind; nothing of a GPU spawn leaks into the next.
"""

import asyncio
import os
from pathlib import Path

from ..helpers import wait_for
from .hub import api_request, progress_events, request_spawn, server_of, spawn, stop_server

A100 = {"profile": "gpu", "accelerator": "a100"}
T4 = {"profile": "gpu", "accelerator": "t4"}
A100_NODE = "gpu-a100-0"
QUOTA_GPUS = 4  # demo-crater.yaml: quotas.default.gpus


async def free(hub, slug):
    r = await api_request(hub, "crater/capacity")
    assert r.code == 200, r
    return next(a["free"] for a in r.data["accelerators"] if a["slug"] == slug)


async def pod_of(hub, core, user, server=""):
    name = (await server_of(hub, user, server))["state"]["pod_name"]
    return await core.read_namespaced_pod(name, "default")


async def user_pods(core, user):
    """The user's pods, by KubeSpawner's ``hub.jupyter.org/username`` label."""
    pods = await core.list_namespaced_pod("default", label_selector=f"hub.jupyter.org/username={user}")
    return pods.items


def container_environ(pod):
    """The environment of the pod's running container process, as the notebook itself sees it.

    localkube's kubelet runs containers as local processes whose ``LOCALKUBE_CONTAINER`` marker
    ends with the container's id (its ``containerID`` in the pod status); this reads that
    process's ``/proc/<pid>/environ``.
    """
    container_id = pod.status.container_statuses[0].container_id.removeprefix("containerd://")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "environ").read_bytes()
        except OSError:
            continue
        env = dict(v.split(b"=", 1) for v in raw.split(b"\0") if b"=" in v)
        marker = env.get(b"LOCALKUBE_CONTAINER", b"").decode()
        if marker.endswith(f"/{container_id}"):
            return {k.decode(): v.decode() for k, v in env.items()}
    raise AssertionError(f"no running container process found for pod {pod.metadata.name}")


async def until_free(hub, slug, expected):
    async def reached():
        return await free(hub, slug) == expected

    await wait_for(reached, timeout=30, message=f"{expected} free {slug} in the capacity API")


async def test_a100_x2_server_gets_two_a100s_and_gives_them_back(crater_hub, make_crater_user, core):
    hub = crater_hub
    user = await make_crater_user("a100")
    before = await free(hub, "a100")

    await spawn(hub, user, {**A100, "gpus": 2})

    pod = await pod_of(hub, core, user)
    notebook = pod.spec.containers[0]
    assert notebook.resources.requests["nvidia.com/gpu"] == "2"
    assert notebook.resources.limits["nvidia.com/gpu"] == "2"
    assert pod.spec.node_name == A100_NODE
    assert pod.spec.node_selector["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    devices = container_environ(pod)["NVIDIA_VISIBLE_DEVICES"].split(",")
    assert len(devices) == 2 and len(set(devices)) == 2, devices
    await until_free(hub, "a100", before - 2)

    await stop_server(hub, user)
    await until_free(hub, "a100", before)


async def test_named_server_beyond_the_gpu_quota_is_refused(crater_hub, make_crater_user, core):
    hub = crater_hub
    user = await make_crater_user("quota")
    await spawn(hub, user, {**T4, "gpus": QUOTA_GPUS})
    pods_before = {p.metadata.name for p in await user_pods(core, user)}

    r = await request_spawn(hub, user, {**T4, "gpus": 1}, server="second")

    assert r.code == 403, r
    assert r.data["message"] == (f"Over quota: 1 more GPU would exceed your GPU quota: "
                                 f"{QUOTA_GPUS} of {QUOTA_GPUS} in use, 0 left."), r.data
    assert await server_of(hub, user, "second") is None
    assert {p.metadata.name for p in await user_pods(core, user)} == pods_before

    async def no_record_left():  # not even a stopped one, in the admin page
        r = await api_request(hub, f"users/{user}?include_stopped_servers=1")
        return "second" not in r.data["servers"]

    await wait_for(no_record_left, timeout=10, message="the refused server's record to go")
    # A CPU server beside it is within quota.
    await spawn(hub, user, {"profile": "cpu"}, server="cpu")


async def test_concurrent_spawns_over_quota_exactly_one_starts(crater_hub, make_crater_user, core):
    hub = crater_hub
    user = await make_crater_user("race")
    four = {**T4, "gpus": 4}  # either alone is within quota (4) and fits the T4 node (8); both not

    answers = await asyncio.gather(*(request_spawn(hub, user, four, server=name)
                                     for name in ("one", "two")))

    codes = sorted(r.code for r in answers)
    assert codes in ([202, 403], [201, 403]), answers
    refused = next(r for r in answers if r.code == 403)
    assert refused.data["message"] == ("Over quota: 4 more GPUs would exceed your GPU quota: "
                                       "4 of 4 in use, 0 left."), refused
    started = "one" if answers[0].code != 403 else "two"
    events = await progress_events(hub, user, started)
    assert events[-1].get("ready"), events
    servers = (await api_request(hub, f"users/{user}")).data["servers"]
    assert list(servers) == [started], servers
    assert len(await user_pods(core, user)) == 1


async def test_ml_staff_profile_is_refused_to_others_and_nothing_is_created(
        crater_hub, make_crater_user, core):
    hub = crater_hub
    user = await make_crater_user("outsider")

    r = await request_spawn(hub, user, {"profile": "a100-staff"})

    assert r.code == 403, r
    assert "a100-staff" in r.data["message"] and "ml-staff" in r.data["message"], r.data
    assert await server_of(hub, user) is None
    assert await user_pods(core, user) == []
    pvcs = await core.list_namespaced_persistent_volume_claim(
        "default", label_selector=f"hub.jupyter.org/username={user}")
    assert pvcs.items == []


async def test_invalid_options_are_refused_with_the_field_named(crater_hub, make_crater_user, core):
    hub = crater_hub
    user = await make_crater_user("invalid")
    cases = [
        ({"profile": "nope"}, "profile"),
        ({**T4, "gpus": 3}, "gpus"),  # T4 offers 1, 2, 4, 8
        ({**T4, "gpus": -1}, "gpus"),
        ({**T4, "gpus": "two"}, "gpus"),
        ({"profile": "gpu", "accelerator": "h100", "gpus": 1}, "accelerator"),
    ]
    for options, field in cases:
        r = await request_spawn(hub, user, options)
        assert r.code == 400, (options, r)
        assert field in r.data["message"], (options, r.data)
        assert await server_of(hub, user) is None, options
    assert await user_pods(core, user) == []


async def test_cpu_server_after_a_gpu_server_carries_nothing_of_it(crater_hub, make_crater_user, core):
    hub = crater_hub
    user = await make_crater_user("gpu-then-cpu")
    await spawn(hub, user, {**A100, "gpus": 1})
    gpu_pod = await pod_of(hub, core, user)
    assert gpu_pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    await stop_server(hub, user)

    await spawn(hub, user, {"profile": "cpu"})

    pod = await pod_of(hub, core, user)
    resources = pod.spec.containers[0].resources
    assert "nvidia.com/gpu" not in (resources.requests or {})
    assert "nvidia.com/gpu" not in (resources.limits or {})
    assert "nvidia.com/gpu.product" not in (pod.spec.node_selector or {})
    assert not any(t.key == "nvidia.com/gpu" for t in pod.spec.tolerations or [])
    assert "NVIDIA_VISIBLE_DEVICES" not in container_environ(pod)
