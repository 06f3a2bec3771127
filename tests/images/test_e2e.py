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

from crater_hub.images.local_registry import PUSH_USER
from crater_hub.images.registry import RegistryClient
from tests.e2e.hub import api_request, request_spawn, spawn, stop_all_servers, stop_server
from tests.helpers import wait_for
from tests.queue.helpers import logs, submit, wait_state

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

    # no push credential in any object outside the system namespace; the read-only pull secret is
    # in the servers' namespace and holds the pull account
    await no_push_credential_in_the_cluster(images_cluster, registry)


async def no_push_credential_in_the_cluster(cluster, registry):
    import base64
    import json

    from crater_hub.images.local_registry import PULL_USER

    password = registry.credentials()[PUSH_USER]
    secrets = {f"{PUSH_USER}:{password}", password}
    forbidden = secrets | {base64.b64encode(x.encode()).decode() for x in secrets}
    kinds = "pods,secrets,configmaps,jobs.batch,events,services,persistentvolumeclaims"
    objects = json.loads(await kubectl(cluster, "get", kinds, "--all-namespaces", "-o", "json"))["items"]
    assert objects
    for obj in objects:
        if obj["metadata"].get("namespace") == "crater-system":
            continue
        text = json.dumps(obj)
        decoded = [base64.b64decode(v).decode(errors="replace") for v in (obj.get("data") or {}).values()]
        for secret in forbidden:
            assert secret not in text and not any(secret in d for d in decoded), \
                f"{obj['kind']} {obj['metadata']['namespace']}/{obj['metadata']['name']} holds the push credential"
    pull = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == "crater-image-pull"]
    assert [o["metadata"]["namespace"] for o in pull] == ["default"]
    config = json.loads(base64.b64decode(pull[0]["data"][".dockerconfigjson"]))
    assert config["auths"][registry.host]["username"] == PULL_USER


async def test_refusals_at_the_request_and_commits_that_fail(images_hub, images_cluster, registry, users):
    carol, carol_token = await users("carol")
    dave, dave_token = await users("dave")
    await spawn(images_hub, carol, {"profile": "cpu"})
    commits = "crater/images/commits"

    # another user's server: it does not exist for dave; a stopped (unknown) server of one's own: 404/409
    r = await api_request(images_hub, commits, "POST", {"server": "", "name": "x", "tag": "v1", "user": carol},
                          token=dave_token)
    assert r.code == 404, r
    r = await api_request(images_hub, commits, "POST", {"server": "nope", "name": "x", "tag": "v1"}, token=dave_token)
    assert r.code == 404, r  # no such server
    await spawn(images_hub, dave, {"profile": "cpu"})
    await stop_server(images_hub, dave)
    r = await api_request(images_hub, commits, "POST", {"server": "", "name": "x", "tag": "v1"}, token=dave_token)
    assert r.code == 409 and "not running" in r.data["message"], r

    # names and tags that are not valid references
    for body, field in (({"name": "Bad Name", "tag": "v1"}, "name"), ({"name": "ok", "tag": "-v1"}, "tag"),
                        ({"name": "ok", "tag": "v1", "colour": "red"}, "colour")):
        r = await api_request(images_hub, commits, "POST", {"server": "", **body}, token=carol_token)
        assert r.code == 400 and field in r.data["message"], r

    # over the size cap (20Mi on this hub): failed, with both sizes
    await in_server(images_cluster, carol, "mkdir -p /opt/big && head -c 26214400 /dev/urandom > /opt/big/blob")
    r = await api_request(images_hub, commits, "POST", {"server": "", "name": "big", "tag": "v1"}, token=carol_token)
    assert r.code == 201, r
    done, _ = await follow_commit(images_hub, carol_token, r.data["id"])
    assert done["state"] == "failed" and done["reason"] == "too_large", done
    assert "25.0 MiB" in done["message"] and "20.0 MiB limit" in done["message"], done
    await in_server(images_cluster, carol, "rm -rf /opt/big")

    # the image quota (3 on this hub), checked at the request with the numbers
    made = []
    for i in range(3):
        r = await api_request(images_hub, commits, "POST", {"server": "", "name": f"q{i}", "tag": "v1"},
                              token=carol_token)
        assert r.code == 201, r
        done, _ = await follow_commit(images_hub, carol_token, r.data["id"])
        assert done["state"] == "succeeded", done
        made.append(done)
    r = await api_request(images_hub, commits, "POST", {"server": "", "name": "q3", "tag": "v1"}, token=carol_token)
    assert r.code == 403 and "3 images" in r.data["message"] and "of 3 allowed" in r.data["message"], r

    # an image whose manifest is gone: refused at spawn and at submit with a clear message
    gone = made[0]
    client = RegistryClient(registry.url, PUSH_USER, registry.credentials()[PUSH_USER])
    repository = gone["image"].split("/", 1)[1].rsplit(":", 1)[0]
    assert await client.delete_manifest(repository, gone["digest"])
    r = await request_spawn(images_hub, carol, {"profile": "cpu", "image": gone["image"]}, server="gone")
    assert r.code == 400 and "no longer exists" in r.data["message"], r
    r = await api_request(images_hub, "crater/jobs", "POST",
                          {"command": "true", "image": gone["image"], "profile": "cpu"}, token=carol_token)
    assert r.code == 400 and "no longer exists" in r.data["message"], r

    # deleting a library image removes the entry and its manifest
    lib = (await api_request(images_hub, "crater/images?scope=mine", token=carol_token)).data["images"]
    entry = next(i for i in lib if i["image"] == made[1]["image"])
    r = await api_request(images_hub, f"crater/images/{entry['id']}", "DELETE", token=dave_token)
    assert r.code == 404, r
    r = await api_request(images_hub, f"crater/images/{entry['id']}", "DELETE", token=carol_token)
    assert r.code == 200 and r.data["manifest_deleted"] is True, r
    assert await client.head_manifest(repository.rsplit("/", 1)[0] + "/q1", "v1") is None


async def test_a_push_the_registry_refuses_fails_with_its_reason_and_leaves_no_library_entry(
        images_dir, images_cluster, registry, users):
    from tests.e2e.hub import DEMO_CRATER, HubProcess

    from .conftest import registry_args

    args = [a if not a.startswith("--CraterImages.push_password=") else "--CraterImages.push_password=wrong"
            for a in registry_args(registry)]
    hub = HubProcess(images_dir / "hub-wrong-password", images_cluster.kubeconfig, slow_spawn_timeout=10,
                     env={"CRATER_CONFIG_FILE": str(DEMO_CRATER)}, extra_args=args).start()
    try:
        name = f"erin-{int(time.time() * 1000) % 100000}"
        assert (await api_request(hub, f"users/{name}", "POST")).code == 201
        token = (await api_request(hub, f"users/{name}/tokens", "POST", {"note": "t"})).data["token"]
        await spawn(hub, name, {"profile": "cpu"})
        r = await api_request(hub, "crater/images/commits", "POST", {"server": "", "name": "n", "tag": "v1"},
                              token=token)
        assert r.code == 201, r
        done, _ = await follow_commit(hub, token, r.data["id"])
        assert done["state"] == "failed" and done["reason"] == "registry_refused", done
        assert "refused the credentials (HTTP 401" in done["message"], done
        assert (await api_request(hub, "crater/images?scope=mine", token=token)).data["images"] == []
        await stop_all_servers(hub, name)
    finally:
        hub.stop()


async def test_commit_and_push_time_for_50_mib_of_changes(images_hub, images_cluster, users, capsys):
    """The note's number: a server with 50 MiB of new files (random, so gzip cannot shrink them),
    from the POST to ``succeeded``; then a commit of that image's server (layers stack)."""
    name, token = await users("measure")
    await spawn(images_hub, name, {"profile": "cpu"})
    await in_server(images_cluster, name, "mkdir -p /opt/data && head -c 52428800 /dev/urandom > /opt/data/blob")
    began = time.monotonic()
    # as an administrator (this hub caps users' commits at 20Mi): no size cap
    r = await api_request(images_hub, "crater/images/commits", "POST",
                          {"server": "", "name": "fifty", "tag": "v1", "user": name})
    assert r.code == 201, r
    done, _ = await follow_commit(images_hub, images_hub.admin_token, r.data["id"])
    seconds = time.monotonic() - began
    assert done["state"] == "succeeded", done
    assert done["size"] > 50 * 2**20
    # a commit of a commit: the new image has the first one's layer and its own on top
    await stop_all_servers(images_hub, name)
    await spawn(images_hub, name, {"profile": "cpu", "image": done["image"]}, server="second")
    pod = (await kubectl(images_cluster, "get", "pods", "-n", "default", "-l",
                         f"hub.jupyter.org/username={name}", "-o", "name")).split()[0].split("/", 1)[1]
    await kubectl(images_cluster, "exec", "-n", "default", pod, "-c", "notebook", "--", "sh", "-c",
                  "echo second > /opt/second.txt && rm /opt/data/blob")
    r = await api_request(images_hub, "crater/images/commits", "POST",
                          {"server": "second", "name": "fifty", "tag": "v2", "user": name})
    second, _ = await follow_commit(images_hub, images_hub.admin_token, r.data["id"])
    assert second["state"] == "succeeded", second
    from crater_hub.images.local_registry import PUSH_USER
    from crater_hub.images.registry import RegistryClient, split_image
    _, repository, _ = split_image(second["image"])
    reg = images_hub.extra_args[0].split("=", 1)[1]
    password = next(a for a in images_hub.extra_args if a.startswith("--CraterImages.push_password=")).split("=", 1)[1]
    manifest, _, _ = await RegistryClient(reg, PUSH_USER, password).get_manifest(repository, "v2")
    assert len(manifest["layers"]) == 2 and manifest["layers"][1]["size"] < 2**20  # a whiteout, not 50 MiB
    with capsys.disabled():
        print(f"\ncommit+push of 50 MiB of changes (embedded default, localkube + docker-registry): "
              f"{seconds:.2f}s; image size {done['size']} bytes")


async def test_the_notebook_client_commits_and_lists(images_hub, users):
    from crater_hub.client import Client

    name, token = await users("client")
    await spawn(images_hub, name, {"profile": "cpu"})
    client = Client(api_url=images_hub.api_url, token=token)
    commit = await asyncio.to_thread(client.commit, "from-client", "v1", server="", wait=True, timeout=120)
    assert commit.state == "succeeded" and commit.digest.startswith("sha256:")
    images = await asyncio.to_thread(client.images, "mine")
    assert [(i.name, i.tag, i.digest) for i in images] == [("from-client", "v1", commit.digest)]
    assert "succeeded" in await asyncio.to_thread(client.commit_logs, commit.id)
