"""Real Ray on localkube: a RayCluster becomes a running Ray cluster that takes jobs.

One cluster for the whole module (an idle one costs about a gigabyte and a minute to start): a
head and two workers holding one T4 each, with token authentication, made by localkube's
RayCluster controller from the reference KubeRay CRD. The tests run in order: ready, a job through
the Jobs API runs a GPU task on each worker, the Jobs API refuses a request without the token,
scaling down removes the worker named in ``workersToDelete``, deleting the RayCluster removes its
pods, Service and Secret. Timings and memory are printed (``-s``) as ``RAY-MEASURE`` lines.
"""

import asyncio
import base64
import json
import os
import time
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from crater_hub.localkube import LocalKubeProcess
from tests.helpers import wait_for
from tests.localkube_api import api_client
from tests.reference import crd_errors, load_reference

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="Ray binds wildcard ports: pods need their own network namespace"),
]
ray = pytest.importorskip("ray", reason="the test extra installs ray[default]")
from ray.job_submission import JobStatus, JobSubmissionClient  # noqa: E402

NS = "default"
NAME = "rc"
GROUP, VERSION, PLURAL = "ray.io", "v1", "rayclusters"
RAY_IMAGE = f"rayproject/ray:{ray.__version__}"
MEASURE = {}

# Two GPU tasks that each need a whole GPU: one lands on each worker. Each says where it ran and
# which device Ray gave it.
JOB = (
    "import json, os, socket, ray; ray.init(); "
    "f = ray.remote(num_gpus=1)(lambda: (socket.gethostname(), os.environ.get('CUDA_VISIBLE_DEVICES'), "
    "[str(i) for i in ray.get_gpu_ids()])); "
    "print('RESULT ' + json.dumps(sorted(ray.get([f.remote() for _ in range(2)]))))"
)


def raycluster():
    container = {"name": "ray-head", "image": RAY_IMAGE,
                 "ports": [{"name": "gcs-server", "containerPort": 6379},
                           {"name": "dashboard", "containerPort": 8265},
                           {"name": "client", "containerPort": 10001}],
                 "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}}}
    worker = {"name": "ray-worker", "image": RAY_IMAGE,
              "resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                            "limits": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"}}}
    return {
        "apiVersion": "ray.io/v1", "kind": "RayCluster",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "rayVersion": ray.__version__,
            "authOptions": {"mode": "token"},
            "headGroupSpec": {"rayStartParams": {"num-cpus": "0"},
                              "template": {"spec": {"containers": [container]}}},
            "workerGroupSpecs": [{
                "groupName": "t4", "replicas": 2, "minReplicas": 0, "maxReplicas": 4, "rayStartParams": {},
                "template": {"spec": {"containers": [worker],
                                      "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-Tesla-T4"}}},
            }],
        },
    }


@pytest.fixture(scope="module")
def lk(tmp_path_factory):
    """An isolated localkube with the KubeRay CRD installed and the RayCluster created."""
    proc = LocalKubeProcess(tmp_path_factory.mktemp("raylk"))
    proc.start()
    try:
        import urllib.request

        def post(path, body):
            request = urllib.request.Request(proc.url + path, data=json.dumps(body).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as r:
                return json.loads(r.read())

        post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
             load_reference("kuberay-ray.io_rayclusters.yaml"))
        assert crd_errors(raycluster()) == []
        MEASURE["created"] = time.monotonic()
        post(f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}", raycluster())
        yield proc
    finally:
        proc.stop()
        for key, value in MEASURE.items():
            if key != "created":
                print(f"RAY-MEASURE {key}: {value}")


@pytest.fixture
async def kube(lk):
    async with api_client(lk.kubeconfig) as api:
        yield client.CoreV1Api(api), client.CustomObjectsApi(api)


async def get_rc(custom):
    return await custom.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, NAME)


def conditions(rc):
    return {c["type"]: c["status"] for c in (rc.get("status") or {}).get("conditions") or []}


async def ray_pods(core, node_type=None):
    selector = f"ray.io/cluster={NAME}" + (f",ray.io/node-type={node_type}" if node_type else "")
    pods = (await core.list_namespaced_pod(NS, label_selector=selector)).items
    return [p for p in pods if not p.metadata.deletion_timestamp]


async def token(core):
    secret = await core.read_namespaced_secret(NAME, NS)
    return base64.b64decode(secret.data["auth_token"]).decode()


async def dashboard(custom):
    rc = await get_rc(custom)
    return f"http://{rc['status']['head']['podIP']}:{rc['status']['endpoints']['dashboard']}"


async def test_cluster_becomes_ready_with_kuberays_pods_service_and_secret(kube, lk):
    core, custom = kube

    async def ready():
        rc = await get_rc(custom)
        status = rc.get("status") or {}
        ok = (conditions(rc).get("RayClusterProvisioned") == "True" and conditions(rc).get("HeadPodReady") == "True"
              and status.get("readyWorkerReplicas") == 2)
        return rc if ok else None

    rc = await wait_for(ready, timeout=300, interval=0.5, message="RayClusterProvisioned and 2 ready workers")
    MEASURE["create_to_ready_s"] = round(time.monotonic() - MEASURE["created"], 1)
    assert rc["status"]["state"] == "ready"
    assert rc["status"]["desiredWorkerReplicas"] == 2 and rc["status"]["availableWorkerReplicas"] == 2

    head = (await ray_pods(core, "head"))[0]
    workers = await ray_pods(core, "worker")
    assert head.metadata.name.startswith(f"{NAME}-head-") and len(workers) == 2
    assert all(w.metadata.name.startswith(f"{NAME}-t4-worker-") for w in workers)
    assert head.metadata.labels["ray.io/group"] == "headgroup"
    assert {w.metadata.labels["ray.io/group"] for w in workers} == {"t4"}
    assert rc["status"]["head"]["podIP"] == head.status.pod_ip
    assert {w.spec.node_name for w in workers} == {"gpu-t4-0"}

    start = head.spec.containers[0].args[0]
    assert "ray start --head" in start and "--num-cpus=0" in start and "--dashboard-host=0.0.0.0" in start
    worker_start = workers[0].spec.containers[0].args[0]
    assert f"--address={NAME}-head-svc.{NS}.svc.cluster.local:6379" in worker_start
    assert "--num-gpus=1" in worker_start and "--num-cpus=1" in worker_start
    env = {e.name: e for e in workers[0].spec.containers[0].env}
    assert env["RAY_AUTH_MODE"].value == "token"
    assert env["RAY_AUTH_TOKEN"].value_from.secret_key_ref.name == NAME

    service = await core.read_namespaced_service(f"{NAME}-head-svc", NS)
    assert {p.name: p.port for p in service.spec.ports} == {
        "gcs-server": 6379, "dashboard": 8265, "client": 10001, "metrics": 8080}
    assert service.spec.selector["ray.io/node-type"] == "head"
    assert len(await token(core)) > 20

    # The pods' logs are Ray's own, read through the API as kubectl logs reads them.
    head_log = await core.read_namespaced_pod_log(head.metadata.name, NS, container="ray-head")
    assert "Ray runtime started" in head_log
    worker_log = await core.read_namespaced_pod_log(workers[0].metadata.name, NS, container="ray-worker")
    assert "Ray runtime started" in worker_log
    rss, pss = await cluster_memory(core, lk)
    MEASURE["ready_cluster_rss_mib"], MEASURE["ready_cluster_pss_mib"] = rss, pss


async def test_a_job_through_the_jobs_api_runs_a_gpu_task_on_each_worker(kube):
    core, custom = kube
    jobs = JobSubmissionClient(await dashboard(custom), headers={"Authorization": f"Bearer {await token(core)}"})
    job_id = await asyncio.to_thread(jobs.submit_job, entrypoint=f'python -c "{JOB}"')

    async def finished():
        status = await asyncio.to_thread(jobs.get_job_status, job_id)
        return status if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED) else None

    status = await wait_for(finished, timeout=240, interval=1, message="the Ray job to finish")
    if "create_to_first_job_result_s" not in MEASURE:
        MEASURE["create_to_first_job_result_s"] = round(time.monotonic() - MEASURE["created"], 1)
    logs = await asyncio.to_thread(jobs.get_job_logs, job_id)
    assert status == JobStatus.SUCCEEDED, logs
    result = json.loads(next(line for line in logs.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
    MEASURE["job_result"] = result

    # Each task ran on a different worker, and saw the GPU localkube's device plugin gave that pod.
    workers = {w.metadata.name: json.loads(w.metadata.annotations["localkube.crater.io/devices"])
               for w in await ray_pods(core, "worker")}
    assert sorted(host for host, _, _ in result) == sorted(workers)
    for host, cuda_visible, ray_ids in result:
        assigned = workers[host]["nvidia.com/gpu"]
        assert len(assigned) == 1
        assert cuda_visible == assigned[0] and ray_ids == assigned


async def test_the_jobs_api_refuses_requests_without_the_token(kube):
    import urllib.error
    import urllib.request

    core, custom = kube
    url = await dashboard(custom) + "/api/jobs/"

    def status_of(headers):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    assert await asyncio.to_thread(status_of, {}) == 401
    assert await asyncio.to_thread(status_of, {"Authorization": "Bearer not-the-token"}) == 403
    assert await asyncio.to_thread(status_of, {"Authorization": f"Bearer {await token(core)}"}) == 200


async def test_an_idle_clusters_memory_after_a_job(kube, lk):
    """Measured, not judged (Ray keeps a finished job's worker processes a while)."""
    core, _ = kube
    rss, pss = await cluster_memory(core, lk)
    MEASURE["after_job_cluster_rss_mib"], MEASURE["after_job_cluster_pss_mib"] = rss, pss
    assert rss > 0


async def cluster_memory(core, lk):
    """(RSS, PSS) in MiB of every process of the cluster's pods (namespace holders included)."""
    state = Path(lk.state_dir) / "pods"
    rss = pss = 0
    for pod in await ray_pods(core):
        sandbox = state / f"{NS}_{pod.metadata.name}_{pod.metadata.uid[:8]}"
        for pid in pids_marked(str(sandbox) + "/"):
            rss_kb, pss_kb = memory_of(pid)
            rss, pss = rss + rss_kb, pss + pss_kb
    return round(rss / 1024), round(pss / 1024)


def pids_marked(prefix):
    """Processes of a pod: they carry the kubelet's marker naming its sandbox (like a cgroup)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                env = Path(entry.path, "environ").read_bytes()
            except OSError:
                continue
            if f"LOCALKUBE_CONTAINER={prefix}".encode() in env:
                found.append(int(entry.name))
    return found


def memory_of(pid):
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


async def test_scaling_down_removes_the_worker_named_in_workers_to_delete(kube):
    core, custom = kube
    workers = sorted(w.metadata.name for w in await ray_pods(core, "worker"))
    doomed, kept = workers
    await custom.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, NAME, [
        {"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 1},
        {"op": "add", "path": "/spec/workerGroupSpecs/0/scaleStrategy", "value": {"workersToDelete": [doomed]}},
    ])

    async def scaled():
        names = sorted(w.metadata.name for w in await ray_pods(core, "worker"))
        rc = await get_rc(custom)
        return names == [kept] and rc["status"]["desiredWorkerReplicas"] == 1 \
            and rc["status"]["readyWorkerReplicas"] == 1

    await wait_for(scaled, timeout=60, interval=0.5, message=f"only {kept} left")


async def test_deleting_the_raycluster_removes_its_pods_service_and_secret(kube):
    core, custom = kube
    await custom.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, NAME)

    async def gone():
        pods = (await core.list_namespaced_pod(NS, label_selector=f"ray.io/cluster={NAME}")).items
        services = [s for s in (await core.list_namespaced_service(NS)).items if s.metadata.name.startswith(NAME)]
        secrets = [s for s in (await core.list_namespaced_secret(NS)).items if s.metadata.name == NAME]
        return not pods and not services and not secrets

    await wait_for(gone, timeout=60, interval=0.5, message="the cluster's pods, Service and Secret to go")
