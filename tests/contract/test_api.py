"""localkube's API contract, driven with kubernetes_asyncio over HTTP as a real cluster would be."""

import asyncio

import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.helpers import wait_for


def cm(name, labels=None, data=None, owner=None):
    meta = {"name": name, "labels": labels or {}}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner.metadata.name,
                                    "uid": owner.metadata.uid}]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data or {}}


async def test_discovery_serves_version_and_core_kinds(kube):
    version = await client.VersionApi(kube.api).get_code()
    assert version.major == "1" and version.git_version.endswith("-localkube")
    resources = await kube.core.get_api_resources()
    names = {r.name for r in resources.resources}
    assert {"pods", "pods/log", "pods/status", "nodes", "namespaces", "events", "persistentvolumeclaims",
            "services", "secrets", "configmaps", "serviceaccounts"} <= names
    batch = await client.BatchV1Api(kube.api).get_api_resources()
    assert "jobs" in {r.name for r in batch.resources}


async def test_create_get_list_with_selectors(kube):
    await kube.core.create_namespaced_config_map("default", cm("a", {"team": "x", "tier": "1"}))
    await kube.core.create_namespaced_config_map("default", cm("b", {"team": "y"}))
    created = await kube.core.create_namespaced_config_map("default", {"metadata": {"generateName": "gen-"}})
    assert created.metadata.name.startswith("gen-") and len(created.metadata.name) == len("gen-") + 5

    got = await kube.core.read_namespaced_config_map("a", "default")
    assert got.metadata.labels == {"team": "x", "tier": "1"} and got.metadata.uid

    async def names(**kw):
        return sorted(i.metadata.name for i in (await kube.core.list_namespaced_config_map("default", **kw)).items)

    assert await names(label_selector="team=x") == ["a"]
    assert await names(label_selector="team in (x,y)") == ["a", "b"]
    assert await names(label_selector="team,!tier") == ["b"]
    assert await names(label_selector="team!=x") == ["b", created.metadata.name]
    assert await names(field_selector="metadata.name=b") == ["b"]
    assert await names(field_selector="metadata.name!=b", label_selector="team") == ["a"]
    everywhere = await kube.core.list_config_map_for_all_namespaces(label_selector="team")
    assert sorted(i.metadata.namespace for i in everywhere.items) == ["default", "default"]


async def test_errors_are_status_objects_with_kubernetes_codes(kube):
    with pytest.raises(ApiException) as e:
        await kube.core.read_namespaced_config_map("missing", "default")
    assert e.value.status == 404 and '"reason":"NotFound"' in e.value.body.replace(" ", "")
    await kube.core.create_namespaced_config_map("default", cm("dup"))
    with pytest.raises(ApiException) as e:
        await kube.core.create_namespaced_config_map("default", cm("dup"))
    assert e.value.status == 409 and "AlreadyExists" in e.value.body
    with pytest.raises(ApiException) as e:
        await kube.core.create_namespaced_config_map("default", cm("Not_Valid"))
    assert e.value.status == 422 and "Invalid" in e.value.body
    with pytest.raises(ApiException) as e:
        await kube.core.create_namespaced_config_map("nowhere", cm("x"))
    assert e.value.status == 404 and 'namespaces \\"nowhere\\" not found' in e.value.body
    with pytest.raises(ApiException) as e:
        await kube.core.list_namespaced_config_map("default", label_selector="a in (")
    assert e.value.status == 400


async def test_replace_with_stale_resource_version_conflicts(kube):
    first = await kube.core.create_namespaced_config_map("default", cm("c", data={"v": "1"}))
    first.data = {"v": "2"}
    second = await kube.core.replace_namespaced_config_map("c", "default", first)
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    first.data = {"v": "3"}  # still carries the old resourceVersion
    with pytest.raises(ApiException) as e:
        await kube.core.replace_namespaced_config_map("c", "default", first)
    assert e.value.status == 409 and "Conflict" in e.value.body
    assert (await kube.core.read_namespaced_config_map("c", "default")).data == {"v": "2"}


async def test_merge_json_and_strategic_patches(kube):
    await kube.core.create_namespaced_config_map("default", cm("p", data={"a": "1", "b": "2"}))
    merged = await kube.core.patch_namespaced_config_map(
        "p", "default", {"data": {"a": None, "c": "3"}}, _content_type="application/merge-patch+json")
    assert merged.data == {"b": "2", "c": "3"}
    patched = await kube.core.patch_namespaced_config_map(
        "p", "default", [{"op": "replace", "path": "/data/b", "value": "20"},
                         {"op": "add", "path": "/metadata/labels", "value": {"k": "v"}}],
        _content_type="application/json-patch+json")
    assert patched.data == {"b": "20", "c": "3"} and patched.metadata.labels == {"k": "v"}
    with pytest.raises(ApiException) as e:
        await kube.core.patch_namespaced_config_map(
            "p", "default", [{"op": "test", "path": "/data/b", "value": "nope"}],
            _content_type="application/json-patch+json")
    assert e.value.status == 422

    # strategic merge: containers merge by name; a scheduling gate keeps the pod unscheduled
    pod = {"metadata": {"name": "sm"}, "spec": {
        "schedulingGates": [{"name": "hold"}],
        "containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox:1"}]}}
    await kube.core.create_namespaced_pod("default", pod)
    out = await kube.core.patch_namespaced_pod(
        "sm", "default", {"spec": {"containers": [{"name": "b", "image": "busybox:2"}]}},
        _content_type="application/strategic-merge-patch+json")
    assert [(c.name, c.image) for c in out.spec.containers] == [("a", "busybox"), ("b", "busybox:2")]
    out = await kube.core.patch_namespaced_pod(
        "sm", "default", {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}},
        _content_type="application/strategic-merge-patch+json")
    assert [c.name for c in out.spec.containers] == ["b"]


async def test_status_subresource_is_separate_from_spec(kube):
    await kube.core.create_namespace({"metadata": {"name": "st"}})
    pod = {"metadata": {"name": "s"}, "spec": {"schedulingGates": [{"name": "hold"}],
                                                "containers": [{"name": "c", "image": "busybox"}]}}
    await kube.core.create_namespaced_pod("st", pod)
    updated = await kube.core.patch_namespaced_pod(
        "s", "st", {"metadata": {"labels": {"x": "1"}}, "status": {"phase": "Failed"}},
        _content_type="application/merge-patch+json")
    assert updated.metadata.labels == {"x": "1"} and updated.status.phase == "Pending"
    status = await kube.core.patch_namespaced_pod_status(
        "s", "st", {"metadata": {"labels": {"y": "2"}}, "status": {"message": "hi"}},
        _content_type="application/merge-patch+json")
    assert status.status.message == "hi" and status.metadata.labels == {"x": "1"}


async def test_list_then_watch_resumes_from_resource_version(kube):
    await kube.core.create_namespaced_config_map("default", cm("w1"))
    listed = await kube.core.list_namespaced_config_map("default")
    rv = listed.metadata.resource_version
    await kube.core.create_namespaced_config_map("default", cm("w2"))
    await kube.core.patch_namespaced_config_map("w1", "default", {"data": {"x": "1"}},
                                                _content_type="application/merge-patch+json")
    await kube.core.delete_namespaced_config_map("w2", "default")
    seen = []
    async with watch.Watch().stream(kube.core.list_namespaced_config_map, "default",
                                    resource_version=rv, timeout_seconds=1) as stream:
        async for event in stream:
            seen.append((event["type"], event["object"].metadata.name))
    assert seen == [("ADDED", "w2"), ("MODIFIED", "w1"), ("DELETED", "w2")]


async def test_watch_ends_at_timeout_and_streams_live_changes(kube):
    loop = asyncio.get_running_loop()
    seen = []

    async def consume():
        async with watch.Watch().stream(kube.core.list_namespaced_config_map, "default",
                                        label_selector="live=yes", timeout_seconds=2) as stream:
            async for event in stream:
                seen.append((event["type"], event["object"].metadata.name))

    started = loop.time()
    task = asyncio.create_task(consume())
    await asyncio.sleep(0)  # let the watch open before the change
    await wait_for(lambda: kube.lk.store._watchers, message="watch registered")
    await kube.core.create_namespaced_config_map("default", cm("l1", {"live": "yes"}))
    await kube.core.create_namespaced_config_map("default", cm("l2", {"live": "no"}))
    await kube.core.patch_namespaced_config_map("l2", "default", {"metadata": {"labels": {"live": "yes"}}},
                                                _content_type="application/merge-patch+json")
    await asyncio.wait_for(task, 10)
    assert 1.5 <= loop.time() - started < 6
    # l2 entered the selector by a label change: a selector-aware watch reports it as ADDED
    assert seen == [("ADDED", "l1"), ("ADDED", "l2")]


async def test_too_old_resource_version_is_410_in_stream(make_kube):
    kube = await make_kube(history_size=5)
    first = await kube.core.create_namespaced_config_map("default", cm("old"))
    for i in range(10):
        await kube.core.create_namespaced_config_map("default", cm(f"n{i}"))
    with pytest.raises(ApiException) as e:
        async with watch.Watch().stream(kube.core.list_namespaced_config_map, "default",
                                        resource_version=first.metadata.resource_version,
                                        timeout_seconds=1) as stream:
            async for _ in stream:
                pass
    assert e.value.status == 410


async def test_bookmarks_and_initial_events_end(kube):
    await kube.core.create_namespaced_config_map("default", cm("b1"))
    resp = await kube.core.list_namespaced_config_map(
        "default", watch=True, allow_watch_bookmarks=True, send_initial_events=True,
        resource_version_match="NotOlderThan", resource_version="", timeout_seconds=1,
        _preload_content=False)
    lines = [line for line in (await resp.read()).decode().splitlines() if line]
    import json

    events = [json.loads(line) for line in lines]
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "b1"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_garbage_collection_background_orphan_foreground(kube):
    core = kube.core
    owner = await core.create_namespaced_config_map("default", cm("owner"))
    await core.create_namespaced_config_map("default", cm("dep", owner=owner))
    await core.delete_namespaced_config_map("owner", "default", propagation_policy="Background")

    async def gone(name):
        try:
            await core.read_namespaced_config_map(name, "default")
        except ApiException as e:
            return e.status == 404
        return False

    await wait_for(lambda: gone("dep"), message="background GC of dep")

    owner = await core.create_namespaced_config_map("default", cm("owner2"))
    await core.create_namespaced_config_map("default", cm("kept", owner=owner))
    await core.delete_namespaced_config_map("owner2", "default", propagation_policy="Orphan")
    await wait_for(lambda: gone("owner2"), message="orphaning owner removed")
    kept = await core.read_namespaced_config_map("kept", "default")
    assert not kept.metadata.owner_references

    owner = await core.create_namespaced_config_map("default", cm("owner3"))
    dep = cm("fdep", owner=owner)
    dep["metadata"]["finalizers"] = ["test.crater.io/hold"]
    await core.create_namespaced_config_map("default", dep)
    await core.delete_namespaced_config_map("owner3", "default", propagation_policy="Foreground")
    # the owner waits, marked for deletion, while its dependent is still there
    await wait_for(lambda: kube.lk.store.find(kube.lk.registry.lookup("", "v1", "configmaps"), "default", "fdep")
                   ["metadata"].get("deletionTimestamp"), message="dependent marked for deletion")
    held = await core.read_namespaced_config_map("owner3", "default")
    assert held.metadata.deletion_timestamp and "foregroundDeletion" in held.metadata.finalizers
    await core.patch_namespaced_config_map("fdep", "default", {"metadata": {"finalizers": None}},
                                           _content_type="application/merge-patch+json")
    await wait_for(lambda: gone("fdep"), message="foreground dependent gone")
    await wait_for(lambda: gone("owner3"), message="foreground owner gone after its dependents")


async def test_namespace_deletion_cascades(kube):
    await kube.core.create_namespace({"metadata": {"name": "doomed"}})
    await kube.core.create_namespaced_config_map("doomed", cm("x"))
    await kube.core.create_namespaced_secret("doomed", {"metadata": {"name": "s"}, "stringData": {"a": "b"}})
    await kube.core.delete_namespace("doomed")
    with pytest.raises(ApiException) as e:
        await kube.core.create_namespaced_config_map("doomed", cm("late"))
    assert e.value.status in (403, 404)

    async def ns_gone():
        try:
            await kube.core.read_namespace("doomed")
        except ApiException as e:
            return e.status == 404
        return False

    await wait_for(ns_gone, message="namespace removed")
    assert (await kube.core.list_config_map_for_all_namespaces(field_selector="metadata.namespace=doomed")).items == []
