"""Datasets end to end: the real hub (demo settings, with their demo catalog dataset) on its own
localkube, servers and jobs mounting datasets read-only by subPath, users' datasets shared with
a group, refusals at spawn, submit and read, and delete refused while mounted.

Its own localkube (job names are per hub database, and the queue suite's hub shares its cluster)
and its own database: SQLite, or PostgreSQL under ``QUEUE_DB=postgresql`` (migration
``0002_datasets`` runs there too).
"""

import asyncio
import itertools
import os

import pytest
from kubernetes_asyncio import client

from crater_hub.localkube import LocalKubeProcess
from tests.localkube_api import api_client

from ..contract.conftest import kubectl_binary
from ..e2e.hub import (
    DEMO_CRATER,
    HubProcess,
    api_request,
    progress_events,
    server_path,
    stop_all_servers,
)
from ..helpers import wait_for
from .conftest import share_test_files
from .helpers import logs, submit, wait_state

DEMO = "demo-iris"
_numbers = itertools.count()


@pytest.fixture(scope="module")
def ds_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture(scope="module")
def ds_cluster(ds_dir, tmp_path_factory):
    cluster = LocalKubeProcess(ds_dir / "localkube", tie_to_parent=True,
                               extra_args=share_test_files(tmp_path_factory)).start(timeout=60)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def ds_hub(ds_dir, ds_cluster, postgres):
    url = postgres.createdb("crater_datasets") if postgres is not None else \
        f"sqlite:///{ds_dir / 'hub' / 'jupyterhub.sqlite'}"
    (ds_dir / "hub").mkdir(exist_ok=True)
    process = HubProcess(ds_dir / "hub", ds_cluster.kubeconfig, slow_spawn_timeout=10,
                         env={"CRATER_CONFIG_FILE": str(DEMO_CRATER), "CRATER_DB_URL": url}).start()
    yield process
    process.stop()


@pytest.fixture
async def core(ds_cluster):
    async with api_client(ds_cluster.kubeconfig) as api:
        yield client.CoreV1Api(api)


@pytest.fixture
async def user(ds_hub):
    """``await user(groups=[...])`` -> (name, token); their servers stopped after the test."""
    made = []

    async def make(prefix="d", groups=()):
        name = f"{prefix}{next(_numbers)}-{os.getpid()}"
        assert (await api_request(ds_hub, f"users/{name}", "POST")).code == 201
        for group in groups:
            r = await api_request(ds_hub, f"groups/{group}", "POST")
            assert r.code in (201, 409), r
            r = await api_request(ds_hub, f"groups/{group}/users", "POST", {"users": [name]})
            assert r.code == 200, r
        r = await api_request(ds_hub, f"users/{name}/tokens", "POST", {"note": "dataset tests"})
        assert r.code == 201, r
        made.append(name)
        return name, r.data["token"]

    yield make
    for name in made:
        await stop_all_servers(ds_hub, name)


async def kubectl(cluster, *args, check=True):
    proc = await asyncio.create_subprocess_exec(
        kubectl_binary(), "--kubeconfig", str(cluster.kubeconfig), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    if check and proc.returncode:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {err.decode()}")
    return proc.returncode, out.decode() + err.decode()


async def in_server(cluster, name, script, check=True):
    """Run ``sh -c script`` in ``name``'s default server: (exit code, output)."""
    return await kubectl(cluster, "exec", f"jupyter-{name}", "--", "sh", "-c", script, check=check)


async def spawn(hub, name, options):
    r = await api_request(hub, server_path(name), "POST", options)
    assert r.code in (201, 202), r
    events = await progress_events(hub, name)
    assert events and events[-1].get("ready"), events


async def demo_filled(core):
    async def done():
        pod = await core.read_namespaced_pod("crater-demo-dataset", "default")
        return pod.status.phase == "Succeeded"
    await wait_for(done, timeout=90, interval=0.2, message="the demo dataset's seed pod to finish")


async def test_demo_dataset_is_mounted_read_only_by_subpath_next_to_the_home(ds_hub, ds_cluster, core, user):
    await demo_filled(core)
    name, token = await user()
    r = await api_request(ds_hub, "crater/datasets", token=token)
    assert r.code == 200, r
    demo = next(d for d in r.data["datasets"] if d["ref"] == DEMO)
    assert demo["catalog"] and not demo["writable"]

    await spawn(ds_hub, name, {"datasets": [DEMO]})
    code, out = await in_server(ds_cluster, name, f"cat /datasets/{DEMO}/iris.csv")
    assert "setosa" in out and "species" in out
    code, out = await in_server(ds_cluster, name, f"touch /datasets/{DEMO}/mine.txt", check=False)
    assert code != 0 and "Read-only file system" in out, out
    # the user's own space is writable at the documented path
    await in_server(ds_cluster, name, "echo ok > /my-datasets/probe.txt && cat /my-datasets/probe.txt")

    pod = await core.read_namespaced_pod(f"jupyter-{name}", "default")
    volumes = {v.name: v for v in pod.spec.volumes}
    assert volumes["home"].persistent_volume_claim.claim_name == f"claim-{name}"
    assert volumes["crater-data-crater-data"].persistent_volume_claim.claim_name == "crater-data"
    mounts = {m.mount_path: m for m in pod.spec.containers[0].volume_mounts}
    assert mounts[f"/datasets/{DEMO}"].read_only is True
    assert mounts[f"/datasets/{DEMO}"].sub_path == f"public/{DEMO}"
    assert "/home/jovyan" in mounts and not mounts["/home/jovyan"].read_only
    assert pod.metadata.annotations["crater.io/datasets"] == DEMO

    r = await api_request(ds_hub, "crater/datasets", token=token)
    demo = next(d for d in r.data["datasets"] if d["ref"] == DEMO)
    assert any(w["pod"] == f"jupyter-{name}" for w in demo["mounted"])

    # a job of this user asks for no dataset: it gets none of the server's (nor its own space)
    job = await submit(ds_hub, token, command=f"test ! -e /datasets/{DEMO} && test ! -e /my-datasets")
    done = await wait_state(ds_hub, token, job["id"], ("succeeded", "failed"), timeout=90)
    assert done["state"] == "succeeded" and done["datasets"] == [], done


async def test_a_dataset_shared_with_a_group_reaches_members_only(ds_hub, ds_cluster, user):
    group = f"team-{os.getpid()}"
    alice, alice_token = await user("alice")
    bob, bob_token = await user("bob", groups=[group])
    carol, carol_token = await user("carol")

    r = await api_request(ds_hub, "crater/datasets", "POST",
                          {"name": "corpus", "description": "a small corpus"}, token=alice_token)
    assert r.code == 201, r
    assert r.data["ref"] == f"{alice}/corpus" and r.data["path"] == f"users/{alice}/corpus"
    ref = r.data["ref"]

    await spawn(ds_hub, alice, {})
    await in_server(ds_cluster, alice,
                    "mkdir -p /my-datasets/corpus && echo hello-from-alice > /my-datasets/corpus/hello.txt")

    r = await api_request(ds_hub, f"crater/datasets/{ref}/shares", "POST",
                          {"kind": "group", "name": group}, token=alice_token)
    assert r.code == 201, r
    assert r.data["shares"]["groups"] == [group]

    job = await submit(ds_hub, bob_token, command="cat /datasets/corpus/hello.txt", datasets=[ref])
    assert job["datasets"] == [ref]
    done = await wait_state(ds_hub, bob_token, job["id"], ("succeeded", "failed"), timeout=90)
    assert done["state"] == "succeeded", done
    assert "hello-from-alice" in (await logs(ds_hub, bob_token, job["id"]))[2]

    # a non-member: 404 on read, 403 naming it at spawn and submit
    r = await api_request(ds_hub, f"crater/datasets/{ref}", token=carol_token)
    assert r.code == 404, r
    r = await api_request(ds_hub, server_path(carol), "POST", {"datasets": [ref]})
    assert r.code == 403 and ref in r.data["message"], r
    r = await api_request(ds_hub, "crater/jobs", "POST", {"command": "true", "datasets": [ref]},
                          token=carol_token)
    assert r.code == 403 and ref in r.data["message"], r

    # mounted in bob's server: alice may not delete it, and is told where
    await spawn(ds_hub, bob, {"datasets": [ref]})
    code, out = await in_server(ds_cluster, bob, "cat /datasets/corpus/hello.txt")
    assert "hello-from-alice" in out
    r = await api_request(ds_hub, f"crater/datasets/{ref}", "DELETE", token=alice_token)
    assert r.code == 409, r
    assert f"jupyter-{bob}" in r.data["message"]
    assert [w["pod"] for w in r.data["mounted"]] == [f"jupyter-{bob}"]

    # unshared: what runs keeps it, the next start is refused
    r = await api_request(ds_hub, f"crater/datasets/{ref}/shares/group/{group}", "DELETE",
                          token=alice_token)
    assert r.code == 200 and r.data["shares"]["groups"] == [], r
    code, out = await in_server(ds_cluster, bob, "cat /datasets/corpus/hello.txt")
    assert "hello-from-alice" in out
    await stop_all_servers(ds_hub, bob)
    r = await api_request(ds_hub, server_path(bob), "POST", {"datasets": [ref]})
    assert r.code == 403 and ref in r.data["message"], r

    r = await api_request(ds_hub, f"crater/datasets/{ref}", "DELETE", token=alice_token)
    assert r.code == 204, r
    r = await api_request(ds_hub, f"crater/datasets/{ref}", token=alice_token)
    assert r.code == 404, r


async def test_a_group_dataset_is_made_filled_and_used_by_members_only(ds_hub, ds_cluster, core, user):
    group = f"crew-{os.getpid()}"
    ann, ann_token = await user("ann", groups=[group])
    ben, ben_token = await user("ben", groups=[group])
    cid, cid_token = await user("cid")

    r = await api_request(ds_hub, "crater/datasets", "POST",
                          {"name": "shared", "space": "group", "group": group, "editable": True},
                          token=ann_token)
    assert r.code == 201, r
    ref = f"@{group}/shared"
    assert (r.data["ref"], r.data["owner"], r.data["group"], r.data["path"]) == (
        ref, f"@{group}", group, f"groups/{group}/shared")
    r = await api_request(ds_hub, "crater/datasets", "POST",
                          {"name": "theirs", "space": "group", "group": group}, token=cid_token)
    assert r.code == 403 and f"not a member of '{group}'" in r.data["message"], r

    # ann fills it from her server, where her group's space is mounted writable
    await spawn(ds_hub, ann, {})
    group_dir = f"/my-datasets-groups/{group}"
    await in_server(ds_cluster, ann, f"mkdir -p {group_dir}/shared && "
                                     f"echo hello-from-ann > {group_dir}/shared/hello.txt")
    pod = await core.read_namespaced_pod(f"jupyter-{ann}", "default")
    mounts = {m.mount_path: m for m in pod.spec.containers[0].volume_mounts}
    assert mounts[group_dir].sub_path == f"groups/{group}" and not mounts[group_dir].read_only
    assert mounts["/my-datasets"].sub_path == f"users/{ann}"

    # ben, another member, sees it and mounts it in a job: editable, so writable for members
    r = await api_request(ds_hub, "crater/datasets", token=ben_token)
    assert [d["ref"] for d in r.data["datasets"] if d["group"] == group] == [ref]
    assert next(d for d in r.data["datasets"] if d["ref"] == ref)["writable"] is True
    job = await submit(ds_hub, ben_token, datasets=[ref],
                       command="cat /datasets/shared/hello.txt && echo from-ben > /datasets/shared/ben.txt")
    assert job["datasets"] == [ref]
    done = await wait_state(ds_hub, ben_token, job["id"], ("succeeded", "failed"), timeout=90)
    assert done["state"] == "succeeded", done
    assert "hello-from-ann" in (await logs(ds_hub, ben_token, job["id"]))[2]
    _, out = await in_server(ds_cluster, ann, f"cat {group_dir}/shared/ben.txt")
    assert "from-ben" in out

    # a non-member: 404 on read, 403 naming it at submit and spawn; a malformed reference is 400
    r = await api_request(ds_hub, f"crater/datasets/{ref}", token=cid_token)
    assert r.code == 404, r
    r = await api_request(ds_hub, "crater/jobs", "POST", {"command": "true", "datasets": [ref]},
                          token=cid_token)
    assert r.code == 403 and ref in r.data["message"], r
    r = await api_request(ds_hub, server_path(cid), "POST", {"datasets": [ref]})
    assert r.code == 403 and ref in r.data["message"], r
    r = await api_request(ds_hub, "crater/jobs", "POST", {"command": "true", "datasets": ["@/shared"]},
                          token=cid_token)
    assert r.code == 400 and "'@group/name'" in r.data["message"], r

    # mounted in ben's server: no member may delete it, and is told where; then ben may
    await spawn(ds_hub, ben, {"datasets": [ref]})
    r = await api_request(ds_hub, f"crater/datasets/{ref}", "DELETE", token=ann_token)
    assert r.code == 409 and f"jupyter-{ben}" in r.data["message"], r
    r = await api_request(ds_hub, f"crater/datasets/{ref}", "DELETE", token=cid_token)
    assert r.code == 404, r
    await stop_all_servers(ds_hub, ben)
    r = await api_request(ds_hub, f"crater/datasets/{ref}", "DELETE", token=ben_token)
    assert r.code == 204, r
    r = await api_request(ds_hub, f"crater/datasets/{ref}", token=ann_token)
    assert r.code == 404, r


@pytest.mark.parametrize("body, status, words", [
    ({"name": "../etc"}, 400, "name must be lowercase"),
    ({"name": "Big_Data"}, 400, "name must be lowercase"),
    ({"name": "x" * 64}, 400, "at most 63"),
    ({"name": "ok", "kind": "table"}, 400, "kind must be one of dataset, model"),
    ({"name": "ok", "path": "/etc"}, 400, "unknown field(s) 'path'"),
    ({"name": "ok", "public": True}, 403, "only administrators"),
    ({"name": DEMO}, 409, "taken by a catalog dataset"),
    ("not an object", 400, "JSON object"),
])
async def test_bad_dataset_bodies_are_refused_naming_the_field(ds_hub, user, body, status, words):
    _, token = await user()
    r = await api_request(ds_hub, "crater/datasets", "POST", body, token=token)
    assert r.code == status and words in r.data["message"], r


async def test_duplicates_traversal_and_long_lists_are_refused(ds_hub, user):
    name, token = await user()
    assert (await api_request(ds_hub, "crater/datasets", "POST", {"name": "twice"},
                              token=token)).code == 201
    r = await api_request(ds_hub, "crater/datasets", "POST", {"name": "twice"}, token=token)
    assert r.code == 409 and "already exists" in r.data["message"], r
    for datasets, words in (([f"{name}/../../etc"], "not a dataset reference"),
                            (["/etc/passwd"], "not a dataset reference"),
                            ([DEMO] * 9, "at most 8"),
                            ("nope", "does not exist or is not shared")):
        r = await api_request(ds_hub, "crater/jobs", "POST", {"command": "true", "datasets": datasets},
                              token=token)
        assert r.code in (400, 403) and words in r.data["message"], (datasets, r)
        r = await api_request(ds_hub, server_path(name), "POST", {"datasets": datasets})
        assert r.code in (400, 403) and words in r.data["message"], (datasets, r)
    r = await api_request(ds_hub, f"crater/datasets/{name}/twice/shares", "POST",
                          {"kind": "group", "name": "no-such-group"}, token=token)
    assert r.code == 400 and "no group 'no-such-group'" in r.data["message"], r


async def test_a_queued_job_is_checked_again_when_it_would_start(ds_hub, user):
    """Shared at submit, unshared while the job waits (here for quota: its owner's server holds
    all 4 GPUs of it): refused when it would start, failed saying why; nothing runs."""
    group = f"late-{os.getpid()}"
    alice, alice_token = await user("alice")
    bob, bob_token = await user("bob", groups=[group])
    ref = (await api_request(ds_hub, "crater/datasets", "POST", {"name": "later"},
                             token=alice_token)).data["ref"]
    r = await api_request(ds_hub, f"crater/datasets/{ref}/shares", "POST",
                          {"kind": "group", "name": group}, token=alice_token)
    assert r.code == 201, r
    await spawn(ds_hub, bob, {"profile": "gpu", "accelerator": "a100", "gpus": 4})
    job = await submit(ds_hub, bob_token, command="ls /datasets/later", datasets=[ref],
                       profile="gpu", accelerator="a100", gpus=1)
    waiting = await wait_state(ds_hub, bob_token, job["id"], "queued")
    assert waiting["waiting"], waiting  # for quota

    r = await api_request(ds_hub, f"crater/datasets/{ref}/shares/group/{group}", "DELETE",
                          token=alice_token)
    assert r.code == 200, r
    await stop_all_servers(ds_hub, bob)
    done = await wait_state(ds_hub, bob_token, job["id"], ("failed", "succeeded", "running"))
    assert done["state"] == "failed", done
    assert "refused at start" in done["reason"] and ref in done["reason"], done
    assert done["k8s_job"] is None  # no Job was created


async def test_describe_list_and_admin_listing(ds_hub, user):
    group = f"readers-{os.getpid()}"
    ada, ada_token = await user("ada")
    ben, ben_token = await user("ben", groups=[group])
    _, cy_token = await user("cy")
    ref = (await api_request(ds_hub, "crater/datasets", "POST", {"name": "notes", "kind": "model"},
                             token=ada_token)).data["ref"]
    await api_request(ds_hub, f"crater/datasets/{ref}/shares", "POST", {"kind": "user", "name": ben},
                      token=ada_token)
    r = await api_request(ds_hub, f"crater/datasets/{ref}", "PATCH",
                          {"description": "v2", "editable": True}, token=ada_token)
    assert r.code == 200 and (r.data["description"], r.data["editable"]) == ("v2", True), r
    r = await api_request(ds_hub, f"crater/datasets/{ref}", "PATCH", {"description": "mine"},
                          token=ben_token)
    assert r.code == 403 and "only" in r.data["message"], r  # shared with him: seen, not his
    r = await api_request(ds_hub, f"crater/datasets/{ref}", "PATCH", {"description": "x"},
                          token=cy_token)
    assert r.code == 404, r
    r = await api_request(ds_hub, f"crater/datasets/{ref}", "PATCH", {"name": "renamed"},
                          token=ada_token)
    assert r.code == 400 and "unknown field(s) 'name'" in r.data["message"], r

    mine = {d["ref"]: d for d in (await api_request(ds_hub, "crater/datasets", token=ben_token)).data["datasets"]}
    assert mine[ref]["shares"]["users"] == [ben] and not mine[ref]["writable"]
    assert ref not in {d["ref"] for d in (await api_request(ds_hub, "crater/datasets",
                                                            token=cy_token)).data["datasets"]}
    r = await api_request(ds_hub, "crater/datasets?all=1", token=cy_token)
    assert r.code == 403, r
    r = await api_request(ds_hub, "crater/datasets?all=1")  # the admin token
    assert r.code == 200 and ref in {d["ref"] for d in r.data["datasets"]}, r
    r = await api_request(ds_hub, f"crater/datasets/{ref}/shares/user/nobody", "DELETE",
                          token=ada_token)
    assert r.code == 404, r
