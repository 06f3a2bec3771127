"""classify() and device_requests() on the pods the real creators make: KubeSpawner 7 builds the
server pods, crater's queue builds the job pods; KubeRay's and z2jh's pods are written as those
projects label them."""

import types

import pytest
from kubernetes_asyncio.client import ApiClient
from kubespawner import KubeSpawner
from kubespawner import spawner as kubespawner_module

from crater_hub.gpus.workloads import Workload, classify, device_requests
from crater_hub.queue import manifest


@pytest.fixture
def no_cluster_client(monkeypatch):
    """KubeSpawner loads a kubeconfig when built; building a pod manifest needs no cluster."""
    monkeypatch.setattr(kubespawner_module, "load_config", lambda **kw: None)
    monkeypatch.setattr(kubespawner_module, "shared_client", lambda *a, **kw: None)


async def server_pod(user_name, server_name="", gpus=0):
    spawner = KubeSpawner(_mock=True,
                          orm_spawner=types.SimpleNamespace(name=server_name, server=None))
    spawner.user.name = user_name
    if gpus:
        spawner.extra_resource_limits = {"nvidia.com/gpu": str(gpus)}
        spawner.extra_resource_guarantees = {"nvidia.com/gpu": str(gpus)}
    pod = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())
    pod["metadata"]["namespace"] = "jhub"
    return pod


def job_pod(owner, job_id, gpus):
    """The pod the Job controller makes from crater's Job manifest."""
    job = types.SimpleNamespace(
        id=job_id, attempt=0, name="train", owner=owner, image="python:3.11", command=["true"],
        env={}, cpu="1", cpu_limit=None, memory="1Gi", memory_limit=None, max_runtime=3600,
        gpus=gpus, shape={"resource": "nvidia.com/gpu", "device_env": "NVIDIA_VISIBLE_DEVICES"},
    )
    made = manifest.build(job, "jhub", ttl_after_finished=600)
    template = made["spec"]["template"]
    return {"metadata": {**template["metadata"], "name": f"{made['metadata']['name']}-x7k2p",
                         "namespace": "jhub"},
            "spec": template["spec"]}


async def test_a_named_server_of_a_user_whose_name_kubespawner_escapes(no_cluster_client):
    pod = await server_pod("Ann.Lee@example.org", "gpu-box", gpus=2)
    # the label is escaped: the real name comes from the annotation
    assert pod["metadata"]["labels"]["hub.jupyter.org/username"] != "Ann.Lee@example.org"
    assert classify(pod, system_namespaces=("jhub",)) == Workload(
        "server", "Ann.Lee@example.org", "gpu-box", "/user/Ann.Lee%40example.org/gpu-box/")
    assert device_requests(pod) == {"nvidia.com/gpu": 2}


async def test_a_default_server(no_cluster_client):
    pod = await server_pod("ann")
    assert classify(pod) == Workload("server", "ann", "", "/user/ann/")
    assert device_requests(pod) == {}


def test_a_job_pod_names_its_owner_and_links_its_page():
    pod = job_pod("Bob Smith", 12, 2)
    assert pod["metadata"]["labels"]["crater.io/owner"] != "Bob Smith"  # escaped
    assert classify(pod, system_namespaces=("jhub",)) == Workload(
        "job", "Bob Smith", "12", "/hub/crater/jobs/12")
    assert device_requests(pod) == {"nvidia.com/gpu": 2}


def kuberay_pod(cluster, node_type, owner=None, gpus=0):
    labels = {"ray.io/cluster": cluster, "ray.io/node-type": node_type,
              "ray.io/group": "headgroup" if node_type == "head" else "gpu-workers",
              "ray.io/is-ray-node": "yes", "app.kubernetes.io/name": "kuberay",
              "app.kubernetes.io/created-by": "kuberay-operator"}
    annotations = {}
    if owner:
        labels["crater.io/owner"] = manifest.escape_label(owner)
        annotations["crater.io/owner-name"] = owner
    resources = {"limits": {"cpu": "2", "nvidia.com/gpu": str(gpus)}} if gpus else {}
    return {"metadata": {"name": f"{cluster}-{node_type}-abcde", "namespace": "jhub",
                         "labels": labels, "annotations": annotations},
            "spec": {"containers": [{"name": "ray-worker", "resources": resources}]}}


def test_ray_pods_of_a_hub_user_and_of_someone_else():
    assert classify(kuberay_pod("ann-ray", "worker", owner="ann@x", gpus=1),
                    system_namespaces=("jhub",)) == Workload("ray", "ann@x", "ann-ray", None)
    assert device_requests(kuberay_pod("ann-ray", "worker", owner="ann@x", gpus=1)) == {
        "nvidia.com/gpu": 1}
    other = kuberay_pod("team-ray", "head")
    other["metadata"]["namespace"] = "research"
    assert classify(other) == Workload("ray", None, "team-ray", None)


@pytest.mark.parametrize("namespace,labels", [
    ("jhub", {"app": "jupyterhub", "component": "hub", "release": "jhub"}),
    ("jhub", {"app": "jupyterhub", "component": "proxy"}),
    ("jhub", {"app": "jupyterhub", "component": "user-scheduler"}),
    ("kube-system", {"k8s-app": "kube-dns"}),
    ("kube-public", {}),
    ("gpu-operator", {"app": "nvidia-dcgm-exporter"}),
])
def test_platform_pods_are_system(namespace, labels):
    pod = {"metadata": {"name": "p-1", "namespace": namespace, "labels": labels}, "spec": {}}
    assert classify(pod, system_namespaces=("jhub", "gpu-operator")) == Workload(
        "system", None, "p-1", None)


def test_crater_commit_pods_are_system_with_their_owner():
    pod = {"metadata": {"name": "commit-1", "namespace": "crater-system",
                        "labels": {"app.kubernetes.io/managed-by": "crater-hub",
                                   "crater.io/kind": "commit", "crater.io/owner": "ann"}},
           "spec": {}}
    assert classify(pod) == Workload("system", "ann", "commit-1", None)


def test_anything_else_is_external():
    pod = {"metadata": {"name": "trainer-0", "namespace": "vision",
                        "labels": {"app": "trainer", "component": "singleuser-server"}},
           "spec": {"containers": [{"name": "t", "resources": {
               "requests": {"cpu": "4", "amd.com/gpu": "1"}, "limits": {"amd.com/gpu": "1"}}}]}}
    # a component label alone does not make a hub server: it needs the hub's username
    assert classify(pod, system_namespaces=("jhub",)) == Workload("external", None, "trainer-0", None)
    assert device_requests(pod) == {"amd.com/gpu": 1}


def test_device_requests_counts_like_the_device_manager():
    pod = {"metadata": {"name": "x"}, "spec": {
        "initContainers": [
            {"name": "warm", "resources": {"limits": {"nvidia.com/gpu": "3"}}},
            {"name": "side", "restartPolicy": "Always",
             "resources": {"limits": {"nvidia.com/mig-1g.10gb": "1"}}},
        ],
        "containers": [
            {"name": "a", "resources": {"limits": {"nvidia.com/gpu": "1", "cpu": "2",
                                                   "hugepages-2Mi": "1Gi"}}},
            {"name": "b", "resources": {"requests": {"nvidia.com/gpu": "1",
                                                     "example.kubernetes.io/x": "1"}}},
            {"name": "c", "resources": {"limits": {"nvidia.com/gpu": "0"}}},
        ]}}
    # init peak (3) beats the containers' sum (2); the sidecar's MIG slice adds
    assert device_requests(pod) == {"nvidia.com/gpu": 3, "nvidia.com/mig-1g.10gb": 1}
