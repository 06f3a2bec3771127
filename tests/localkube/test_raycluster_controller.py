"""The RayCluster controller does what KubeRay's operator does; tests play the kubelet.

No Ray runs here (test_raycluster.py runs it): these check the objects the controller makes
against KubeRay's conventions and the Kubernetes schemas, and its reactions (status, scaling,
suspend, deletion) step by step.
"""

import base64
import copy

import pytest
import pytest_asyncio

from crater_hub.localkube.gc import GarbageCollector
from crater_hub.localkube.raycluster import RayClusterController
from crater_hub.localkube.raypods import build_head_service, build_pod, build_token_secret
from crater_hub.localkube.resources import resources_from_crd
from tests.localkube.helpers import wait_for
from tests.reference import crd_errors, k8s_validate, load_reference

pytestmark = pytest.mark.asyncio

IMAGE = "rayproject/ray:2.60.0"


def manifest(name="rc", replicas=2, **spec):
    return {
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "rayVersion": "2.60.0",
            "headGroupSpec": {"rayStartParams": {"num-cpus": "0"}, "template": {"spec": {"containers": [
                {"name": "ray-head", "image": IMAGE, "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}]}}},
            "workerGroupSpecs": [{
                "groupName": "t4", "replicas": replicas, "minReplicas": 0, "maxReplicas": 4,
                "rayStartParams": {},
                "template": {"metadata": {"labels": {"crater.io/owner": "ann"}}, "spec": {"containers": [
                    {"name": "ray-worker", "image": IMAGE, "resources": {
                        "limits": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}}}]}},
            }],
            **spec,
        },
    }


@pytest_asyncio.fixture
async def cluster(make_cluster):
    c = make_cluster()
    for res in resources_from_crd(load_reference("kuberay-ray.io_rayclusters.yaml")):
        c.registry.add(res)
    c.start(RayClusterController, GarbageCollector)
    c.rcs = c.registry.lookup("ray.io", "v1", "rayclusters")
    return c


def create(cluster, body):
    assert crd_errors(body) == []
    return cluster.store.create(cluster.rcs, body, "default")


def rc(cluster, name="rc"):
    return cluster.store.find(cluster.rcs, "default", name)


def ray_pods(cluster, name="rc", node_type=None):
    items, _ = cluster.store.list(cluster.res("", "pods"), "default")
    return [p for p in items if (p["metadata"].get("labels") or {}).get("ray.io/cluster") == name
            and node_type in (None, p["metadata"]["labels"]["ray.io/node-type"])
            and not p["metadata"].get("deletionTimestamp")]


def conditions(obj):
    return {c["type"]: (c["status"], c["reason"]) for c in (obj.get("status") or {}).get("conditions") or []}


def run_ready(cluster, pod):
    """Play the kubelet: the pod runs and its readiness probe passed."""
    cluster.set_phase(pod["metadata"]["name"], "Running", podIP="100.64.0.7",
                      conditions=[{"type": "Ready", "status": "True"}])


async def test_the_objects_are_kuberays_and_valid_kubernetes_objects():
    body = manifest(authOptions={"mode": "token"})
    assert crd_errors(body) == []
    body["metadata"]["uid"] = "u-1"
    head = build_pod(body, "head", body["spec"]["headGroupSpec"])
    worker = build_pod(body, "worker", body["spec"]["workerGroupSpecs"][0])
    for obj in (head, worker, build_head_service(body), build_token_secret(body)):
        k8s_validate({**obj, "metadata": {**obj["metadata"], "name": obj["metadata"].get("name", "x")}})

    assert head["metadata"]["generateName"] == "rc-head-"
    assert worker["metadata"]["generateName"] == "rc-t4-worker-"
    assert worker["metadata"]["labels"] == {
        "ray.io/is-ray-node": "yes", "ray.io/cluster": "rc", "ray.io/node-type": "worker", "ray.io/group": "t4",
        "ray.io/identifier": "rc-worker", "app.kubernetes.io/name": "kuberay",
        "app.kubernetes.io/created-by": "kuberay-operator", "crater.io/owner": "ann"}
    assert head["metadata"]["ownerReferences"][0] == {
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "name": "rc", "uid": "u-1", "controller": True,
        "blockOwnerDeletion": True}

    ray = head["spec"]["containers"][0]
    assert ray["command"] == ["/bin/bash", "-c", "--"]
    assert ray["args"] == ["ulimit -n ${RAY_START_ULIMIT_OPEN_FILES:-65536}; ray start --head --block "
                           "--dashboard-agent-listen-port=52365 --dashboard-host=0.0.0.0 "
                           "--metrics-export-port=8080 --num-cpus=0"]
    w = worker["spec"]["containers"][0]
    assert w["args"] == ["ulimit -n ${RAY_START_ULIMIT_OPEN_FILES:-65536}; ray start "
                         "--address=rc-head-svc.default.svc.cluster.local:6379 --block "
                         "--dashboard-agent-listen-port=52365 --memory=4294967296 --metrics-export-port=8080 "
                         "--num-cpus=2 --num-gpus=1"]
    env = {e["name"]: e for e in w["env"]}
    assert env["RAY_ADDRESS"]["value"] == "rc-head-svc.default.svc.cluster.local:6379"
    assert env["FQ_RAY_IP"]["value"] == "rc-head-svc.default.svc.cluster.local"
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "rc", "key": "auth_token"}}
    assert env["RAY_CLUSTER_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.labels['ray.io/cluster']"}}
    assert {e["name"]: e.get("value") for e in ray["env"]}["RAY_ADDRESS"] == "127.0.0.1:6379"
    assert {"name": "shared-mem", "mountPath": "/dev/shm"} in w["volumeMounts"]
    assert {"name": "shared-mem", "emptyDir": {"medium": "Memory", "sizeLimit": "4Gi"}} in worker["spec"]["volumes"]
    assert w["readinessProbe"]["httpGet"] == {"path": "/api/healthz", "port": 52365}
    (init,) = worker["spec"]["initContainers"]
    assert init["name"] == "wait-gcs-ready" and "ray health-check --address rc-head-svc" in init["args"][0]
    assert {e["name"] for e in init["env"]} >= {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "FQ_RAY_IP"}

    service = build_head_service(body)
    assert service["metadata"]["name"] == "rc-head-svc"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [
        ("gcs-server", 6379), ("serve", 8000), ("metrics", 8080), ("dashboard", 8265), ("client", 10001)]
    token = base64.b64decode(build_token_secret(body)["data"]["auth_token"])
    assert len(base64.b64decode(token)) == 32


async def test_a_command_that_says_ray_start_is_kept_and_others_run_first():
    body = manifest()
    body["metadata"]["uid"] = "u"
    group = copy.deepcopy(body["spec"]["headGroupSpec"])
    group["template"]["spec"]["containers"][0].update(command=["sh", "-c"], args=["echo hi"])
    assert build_pod(body, "head", group)["spec"]["containers"][0]["args"][0].startswith(
        "sh -c echo hi && ulimit -n")
    group["template"]["spec"]["containers"][0].update(command=["ray", "start", "--head", "--block"], args=[])
    built = build_pod(body, "head", group)["spec"]["containers"][0]
    assert built["command"] == ["ray", "start", "--head", "--block"] and built.get("args") == []


async def test_pods_service_secret_and_status_until_ready(cluster):
    made = create(cluster, manifest(authOptions={"mode": "token"}))
    heads = await wait_for(lambda: ray_pods(cluster, node_type="head"), message="the head pod")
    workers = await wait_for(lambda: len(ray_pods(cluster, node_type="worker")) == 2 and
                             ray_pods(cluster, node_type="worker"), message="two workers")
    assert cluster.store.find(cluster.res("", "services"), "default", "rc-head-svc") is not None
    secret = cluster.store.find(cluster.res("", "secrets"), "default", "rc")
    assert secret["metadata"]["ownerReferences"][0]["uid"] == made["metadata"]["uid"]
    status = (await wait_for(lambda: (rc(cluster).get("status") or {}).get("conditions") and rc(cluster)))["status"]
    assert conditions(rc(cluster))["RayClusterProvisioned"] == ("False", "RayClusterPodsProvisioning")
    assert status["desiredWorkerReplicas"] == 2 and status["readyWorkerReplicas"] == 0
    assert (status["desiredCPU"], status["desiredMemory"], status["desiredGPU"]) == ("5", "10Gi", "2")
    assert "state" not in status

    for pod in heads + workers:
        run_ready(cluster, pod)
    ready = await wait_for(lambda: rc(cluster)["status"].get("state") == "ready" and rc(cluster),
                           message="state ready")
    assert conditions(ready)["HeadPodReady"] == ("True", "HeadPodRunningAndReady")
    assert conditions(ready)["RayClusterProvisioned"] == ("True", "AllPodRunningAndReadyFirstTime")
    assert ready["status"]["readyWorkerReplicas"] == 2 and ready["status"]["availableWorkerReplicas"] == 2
    assert ready["status"]["head"] == {"podName": heads[0]["metadata"]["name"], "podIP": "100.64.0.7",
                                       "serviceName": "rc-head-svc", "serviceIP": "100.64.0.7"}
    assert ready["status"]["endpoints"]["dashboard"] == "8265"

    # A worker that stops being ready: counted, but provisioned stays (sticky), as in KubeRay.
    cluster.set_phase(workers[0]["metadata"]["name"], "Running", conditions=[{"type": "Ready", "status": "False"}])
    later = await wait_for(lambda: rc(cluster)["status"]["readyWorkerReplicas"] == 1 and rc(cluster))
    assert conditions(later)["RayClusterProvisioned"][0] == "True" and later["status"]["state"] == "ready"


async def test_scaling_honours_workers_to_delete_then_replicas(cluster):
    create(cluster, manifest())
    workers = await wait_for(lambda: len(ray_pods(cluster, node_type="worker")) == 2 and
                             ray_pods(cluster, node_type="worker"))
    doomed = max(w["metadata"]["name"] for w in workers)
    cluster.store.mutate(cluster.rcs, "default", "rc", lambda o: o["spec"]["workerGroupSpecs"][0].update(
        replicas=1, scaleStrategy={"workersToDelete": [doomed]}))
    left = await wait_for(lambda: [w["metadata"]["name"] for w in ray_pods(cluster, node_type="worker")] == [
        min(w["metadata"]["name"] for w in workers)], message="the named worker deleted")
    assert left
    cluster.store.mutate(cluster.rcs, "default", "rc",
                         lambda o: o["spec"]["workerGroupSpecs"][0].update(replicas=3, scaleStrategy={}))
    await wait_for(lambda: len(ray_pods(cluster, node_type="worker")) == 3, message="three workers")
    cluster.store.mutate(cluster.rcs, "default", "rc",
                         lambda o: o["spec"]["workerGroupSpecs"][0].update(replicas=9))  # maxReplicas is 4
    await wait_for(lambda: len(ray_pods(cluster, node_type="worker")) == 4, message="maxReplicas workers")
    assert rc(cluster)["status"]["desiredWorkerReplicas"] == 4


async def test_suspend_deletes_every_pod_and_resume_recreates_them(cluster):
    create(cluster, manifest(replicas=1))
    await wait_for(lambda: len(ray_pods(cluster)) == 2)
    cluster.store.mutate(cluster.rcs, "default", "rc", lambda o: o["spec"].__setitem__("suspend", True))
    suspended = await wait_for(lambda: conditions(rc(cluster)).get("RayClusterSuspended", ("",))[0] == "True"
                               and rc(cluster), message="suspended")
    assert ray_pods(cluster) == [] and suspended["status"]["state"] == "suspended"
    assert conditions(suspended)["RayClusterSuspending"][0] == "False"
    cluster.store.mutate(cluster.rcs, "default", "rc", lambda o: o["spec"].__setitem__("suspend", False))
    await wait_for(lambda: len(ray_pods(cluster)) == 2, message="pods again")
    assert conditions(rc(cluster))["RayClusterSuspended"][0] == "False"


async def test_a_cluster_created_suspended_starts_nothing(cluster):
    """Kueue creates RayClusters suspended until their workload is admitted."""
    create(cluster, manifest(suspend=True))
    await wait_for(lambda: conditions(rc(cluster)).get("RayClusterSuspended", ("",))[0] == "True",
                   message="suspended")
    assert ray_pods(cluster) == []
    assert conditions(rc(cluster))["RayClusterProvisioned"][0] == "False"


async def test_an_ended_head_pod_is_replaced(cluster):
    create(cluster, manifest(replicas=0))
    (head,) = await wait_for(lambda: ray_pods(cluster, node_type="head"))
    cluster.set_phase(head["metadata"]["name"], "Failed")
    new = await wait_for(lambda: [p for p in ray_pods(cluster, node_type="head")
                                  if p["metadata"]["name"] != head["metadata"]["name"]], message="a new head")
    assert len(new) == 1


async def test_deleting_the_cluster_or_its_owner_pod_removes_everything(cluster):
    owner = cluster.create_pod("notebook")
    body = manifest(authOptions={"mode": "token"})
    body["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": "notebook",
                                            "uid": owner["metadata"]["uid"]}]
    create(cluster, body)
    await wait_for(lambda: len(ray_pods(cluster)) == 3)
    cluster.store.delete(cluster.res("", "pods"), "default", "notebook")
    if cluster.pod("notebook"):  # an unbound pod goes at once; a bound one waits for its kubelet
        cluster.finish_deletion("notebook")
    await wait_for(lambda: rc(cluster) is None, message="the RayCluster to follow its pod")

    def leftovers():
        return [(plural, o["metadata"]["name"]) for plural in ("pods", "services", "secrets")
                for o in cluster.store.list(cluster.res("", plural), "default")[0]]

    await wait_for(lambda: leftovers() == [], message="pods, Service and Secret gone")


async def test_an_invalid_spec_is_reported_not_run(cluster):
    body = manifest()
    body["spec"]["workerGroupSpecs"].append(copy.deepcopy(body["spec"]["workerGroupSpecs"][0]))
    cluster.store.create(cluster.rcs, body, "default")
    failed = await wait_for(lambda: (rc(cluster).get("status") or {}).get("state") == "failed" and rc(cluster))
    assert "unique" in failed["status"]["reason"]
    assert ray_pods(cluster) == []
    assert cluster.events("rc", "InvalidRayClusterSpec")


async def test_kuberay_crd_serves_rayclusters_from_the_start(tmp_path):
    """``--kuberay-crd``: the kind is there without installing KubeRay's CRD (the embedded hub)."""
    from crater_hub.localkube import LocalKube

    nodes = tmp_path / "small.yaml"  # too small for the pods: they stay Pending, no Ray starts here
    nodes.write_text("nodes: [{name: small, capacity: {cpu: '1', memory: 1Gi}}]\n")
    lk = LocalKube(cluster_file=nodes, state_dir=tmp_path / "state", isolation="loopback", kuberay_crd=True)
    await lk.start()
    try:
        res = lk.registry.lookup("ray.io", "v1", "rayclusters")
        assert res is not None and res.has_status
        lk.store.create(res, manifest(replicas=1), "default")
        await wait_for(lambda: len([p for p in lk.store.list(lk.registry.lookup("", "v1", "pods"), "default")[0]
                                    if (p["metadata"].get("labels") or {}).get("ray.io/cluster") == "rc"]) == 2,
                       message="the cluster's pods")
    finally:
        await lk.stop()
