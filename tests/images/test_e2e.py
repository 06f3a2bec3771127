"""Saving a running server as an image on the embedded default, and starting from it.

Real parts only: the hub (jupyterhub_config.py), localkube running the servers in their own
mount namespaces, Debian's docker-registry; the file is written into the server's container with
kubectl exec, as a terminal in the server would.
"""

import asyncio
import sysconfig
import time
from pathlib import Path

import pytest

from tests.e2e.hub import api_request, request_spawn, spawn, stop_all_servers, stop_server
from tests.helpers import wait_for
from tests.queue.helpers import logs, submit, wait_state

from crater_hub.images.local_registry import PUSH_USER
from crater_hub.images.registry import RegistryClient

KUBECTL = Path(sysconfig.get_path("scripts")) / "kubectl"
FILE = "/opt/crater-e2e/hello.txt"


@pytest.fixture
async def users(images_hub):
    made = []

    async def make(prefix, groups=()):
        name = f"{prefix}-{len(made)}-{int(time.time() * 1000) % 100000}"
        assert (await api_request(images_hub, f"users/{name}", "POST")).code == 201
        for group in groups:
            await api_request(images_hub, f"groups/{group}", "POST")
            r = await api_request(images_hub, f"groups/{group}/users", "POST", {"users": [name]})
            assert r.code == 200, r
        r = await api_request(images_hub, f"users/{name}/tokens", "POST", {"note": "test"})
        made.append(name)
        return name, r.data["token"]

    yield make
    for name in made:
        await stop_all_servers(images_hub, name)
        await api_request(images_hub, f"users/{name}", "DELETE")


async def kubectl(cluster, *args):
    proc = await asyncio.create_subprocess_exec(
        str(KUBECTL), "--kubeconfig", str(cluster.kubeconfig), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {err.decode()}"
    return out.decode()


async def pod_of(cluster, user):
    out = await kubectl(cluster, "get", "pods", "-n", "default", "-l",
                        f"hub.jupyter.org/username={user},component=singleuser-server", "-o", "name")
    names = out.split()
    assert len(names) == 1, names
    return names[0].split("/", 1)[1]


async def in_server(cluster, user, command):
    return await kubectl(cluster, "exec", "-n", "default", await pod_of(cluster, user), "-c", "notebook",
                         "--", "sh", "-c", command)


async def follow_commit(hub, token, commit_id, timeout=120):
    seen = []

    async def ended():
        r = await api_request(hub, f"crater/images/commits/{commit_id}?wait=5", token=token)
        assert r.code == 200, r
        seen.append((r.data["state"], r.data["progress"]))
        return r.data if r.data["state"] in ("succeeded", "failed") else None

    return await wait_for(ended, timeout=timeout, interval=0.05, message=f"commit {commit_id} to end"), seen


async def test_save_a_server_start_a_server_and_a_job_from_it_share_with_a_group(
        images_hub, images_cluster, registry, users):
    alice, alice_token = await users("alice")
    bob, bob_token = await users("bob", groups=["img-team"])
    await spawn(images_hub, alice, {"profile": "cpu"})
    await in_server(images_cluster, alice, f"mkdir -p /opt/crater-e2e && echo made-by-alice > {FILE} "
                                           "&& echo in-home > ~/home-file.txt && rm -f /etc/motd")

    r = await api_request(images_hub, "crater/images/commits", "POST",
                          {"server": "", "name": "tools", "tag": "v1", "description": "with hello"},
                          token=alice_token)
    assert r.code == 201, r
    assert r.data["state"] in ("pending", "committing", "pushing")
    assert r.data["image"] == f"{registry.host}/crater/{alice}/tools:v1"
    done, seen = await follow_commit(images_hub, alice_token, r.data["id"])
    assert done["state"] == "succeeded", done
    assert [s for s, _ in seen][-1] == "succeeded" and done["progress"] == 1.0
    log = (await api_request(images_hub, f"crater/images/commits/{done['id']}/logs", token=alice_token)).data["log"]
    assert "pushing" in log and done["digest"] in log

    # the registry lists the tag; the library shows digest and size
    client = RegistryClient(registry.url, PUSH_USER, registry.credentials()[PUSH_USER])
    assert await client.tags(f"crater/{alice}/tools") == ["v1"]
    lib = (await api_request(images_hub, "crater/images?scope=mine", token=alice_token)).data
    mine = [i for i in lib["images"] if i["image"] == done["image"]]
    assert len(mine) == 1 and mine[0]["digest"] == done["digest"] and mine[0]["size"] > 0
    assert mine[0]["source"]["type"] == "commit" and "not part of an image" in lib["note"]

    # a new server from it finds the file; the home's file is not in the image
    await stop_server(images_hub, alice)
    await spawn(images_hub, alice, {"profile": "cpu", "image": done["image"]}, server="again")
    pod = (await kubectl(images_cluster, "get", "pods", "-n", "default", "-l",
                         f"hub.jupyter.org/username={alice}", "-o", "name")).split()[0].split("/", 1)[1]
    out = await kubectl(images_cluster, "exec", "-n", "default", pod, "-c", "notebook", "--", "sh", "-c",
                        f"cat {FILE}; test -e /etc/motd && echo motd-back || echo motd-gone")
    assert out.split() == ["made-by-alice", "motd-gone"]

    # a job from the same image finds it too
    job = await submit(images_hub, alice_token, command=f"cat {FILE}", image=done["image"], profile="cpu")
    job = await wait_state(images_hub, alice_token, job["id"], ("succeeded", "failed"), timeout=90)
    assert job["state"] == "succeeded", job
    assert "made-by-alice" in (await logs(images_hub, alice_token, job["id"]))[2]

    # bob may not use it (not in his library), until it is shared with his group
    r = await request_spawn(images_hub, bob, {"profile": "cpu", "image": done["image"]})
    assert r.code in (400, 403) and done["image"] in r.data["message"], r
    r = await api_request(images_hub, f"crater/images/{mine[0]['id']}", token=bob_token)
    assert r.code == 404
    r = await api_request(images_hub, f"crater/images/{mine[0]['id']}/shares", "PUT",
                          {"groups": ["img-team"]}, token=alice_token)
    assert r.code == 200 and r.data["shared_with"]["groups"] == ["img-team"], r
    shared = (await api_request(images_hub, "crater/images?scope=shared", token=bob_token)).data["images"]
    assert [i["image"] for i in shared] == [done["image"]]
    await spawn(images_hub, bob, {"profile": "cpu", "image": done["image"]})
    out = await kubectl(images_cluster, "exec", "-n", "default", await pod_of(images_cluster, bob),
                        "-c", "notebook", "--", "cat", FILE)
    assert out.strip() == "made-by-alice"
