"""Custom resources: the KubeRay and Kueue CRDs load, and their objects are served like built-ins."""

import pytest
from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.reference import load_reference

# RayJobs: no controller of localkube acts on them (its RayCluster controller would fill a
# RayCluster's status and start pods), so what the API server alone does is what is seen.
RAYJOB = ("ray.io", "v1", "rayjobs")
WORKLOAD = ("kueue.x-k8s.io", "v1beta1", "workloads")


async def load(kube, *names):
    for name in names:
        await kube.ext.create_custom_resource_definition(load_reference(name))


def rayjob(name):
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": name},
            "spec": {"entrypoint": "python -c 'print(1)'", "clusterSelector": {"ray.io/cluster": "shared"}}}


async def test_reference_crds_are_established_and_discoverable(kube):
    await load(kube, "kuberay-ray.io_rayclusters.yaml", "kuberay-ray.io_rayjobs.yaml",
               "kueue-workloads.yaml", "kueue-localqueues.yaml", "kueue-clusterqueues.yaml",
               "kueue-resourceflavors.yaml")
    crd = await kube.ext.read_custom_resource_definition("rayclusters.ray.io")
    assert {c.type: c.status for c in crd.status.conditions}["Established"] == "True"
    from kubernetes_asyncio import client

    groups = await client.ApisApi(kube.api).get_api_versions()
    names = {g.name: g.preferred_version.version for g in groups.groups}
    assert names["ray.io"] == "v1" and names["kueue.x-k8s.io"] == "v1beta2"
    resources = await client.CustomObjectsApi(kube.api).get_api_resources("ray.io", "v1")
    assert {"rayclusters", "rayclusters/status"} <= {r.name for r in resources.resources}


async def test_custom_objects_crud_status_and_watch(kube):
    await load(kube, "kuberay-ray.io_rayjobs.yaml")
    group, version, plural = RAYJOB
    created = await kube.custom.create_namespaced_custom_object(group, version, "default", plural,
                                                                rayjob("rj1"))
    assert created["metadata"]["uid"] and created["kind"] == "RayJob"
    # spec and status move separately (the CRD declares the status subresource)
    await kube.custom.patch_namespaced_custom_object_status(
        group, version, "default", plural, "rj1",
        {"status": {"jobDeploymentStatus": "Running"}},
        _content_type="application/merge-patch+json")
    after = await kube.custom.patch_namespaced_custom_object(
        group, version, "default", plural, "rj1", {"metadata": {"labels": {"a": "b"}}, "status": {"jobStatus": "x"}},
        _content_type="application/merge-patch+json")
    assert after["metadata"]["labels"] == {"a": "b"}
    assert after["status"] == {"jobDeploymentStatus": "Running"}
    listed = await kube.custom.list_namespaced_custom_object(group, version, "default", plural,
                                                             label_selector="a=b")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["rj1"]
    rv = listed["metadata"]["resourceVersion"]
    await kube.custom.delete_namespaced_custom_object(group, version, "default", plural, "rj1")
    events = []
    async with watch.Watch().stream(kube.custom.list_namespaced_custom_object, group, version, "default",
                                    plural, resource_version=rv, timeout_seconds=1) as stream:
        async for ev in stream:
            events.append((ev["type"], ev["object"]["metadata"]["name"]))
    assert events == [("DELETED", "rj1")]


async def test_deleting_a_crd_removes_its_kind_and_objects(kube):
    await load(kube, "kueue-workloads.yaml")
    group, version, plural = WORKLOAD
    await kube.custom.create_namespaced_custom_object(group, version, "default", plural, {
        "apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "Workload", "metadata": {"name": "w"},
        "spec": {"queueName": "q", "podSets": [{"name": "main", "count": 1, "template": {
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}]}})
    await kube.ext.delete_custom_resource_definition("workloads.kueue.x-k8s.io")
    with pytest.raises(ApiException) as e:
        await kube.custom.list_namespaced_custom_object(group, version, "default", plural)
    assert e.value.status == 404
