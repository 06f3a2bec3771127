"""Ray clusters through the real hub on localkube, with real Ray (one 2-worker cluster for the
module: a Ray cluster costs about a gigabyte and 45 s).

As a user with a running notebook server: refusals first (no server named, bad fields, over
quota with the numbers), then a cluster of two T4 workers is created through the REST API and
becomes ready; a Ray job submitted through the hub's dashboard proxy (the Ray token added by the
hub) runs a GPU task on each worker and returns their device ids; another user sees a 404 on
the REST API and the proxy; a second cluster that would pass the GPU quota is a 403; scaling to 1
leaves one worker; deleting it removes its pods and Service; and a cluster bound to the server
is deleted when the server stops. Timings print as ``RAY-HUB-MEASURE`` lines (``-s``).
"""

import asyncio
import json
import os
import textwrap
import time

import pytest
from kubernetes_asyncio import client, config

from tests.helpers import wait_for
from tests.reference import load_reference

from ..client.test_client_in_server import run_in_kernel
from .hub import api_request, request, spawn, stop_server

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="Ray binds wildcard ports: pods need their own network namespace"),
]
ray = pytest.importorskip("ray", reason="the test extra installs ray[default]")
from ray.job_submission import JobStatus, JobSubmissionClient  # noqa: E402

NS = "default"
T4 = {"profile": "gpu", "accelerator": "t4", "gpus": 1}
MEASURE = {}
STATE = {}
JOB = (
    "import json, os, socket, ray; ray.init(); "
    "f = ray.remote(num_gpus=1)(lambda: (socket.gethostname(), os.environ.get('CUDA_VISIBLE_DEVICES'))); "
    "print('RESULT ' + json.dumps(sorted(ray.get([f.remote() for _ in range(2)]))))"
)


@pytest.fixture(scope="module")
def kuberay(localkube):
    """KubeRay's CRD installed in the session's localkube, as the KubeRay chart would."""
    import urllib.error
    import urllib.request

    body = json.dumps(load_reference("kuberay-ray.io_rayclusters.yaml")).encode()
    req = urllib.request.Request(localkube.url + "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                                 data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=10).close()
    except urllib.error.HTTPError as e:
        assert e.code == 409, e  # installed by an earlier module
    yield
    for line in (f"RAY-HUB-MEASURE {k}: {v}" for k, v in MEASURE.items()):
        print(line)


@pytest.fixture
async def kube(localkube):
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(localkube.kubeconfig), client_configuration=cfg)
    async with client.ApiClient(cfg) as api:
        yield client.CoreV1Api(api), client.CustomObjectsApi(api)


@pytest.fixture(scope="module")
def users(crater_hub, kuberay):
    """alice (a running CPU server, a token) and bob (a token); removed after the module.
    (Synchronous: each step runs on a loop of its own, as tests' loops are per test.)"""
    names = ("ray-alice", "ray-bob")

    async def setup():
        tokens = {}
        for name in names:
            r = await api_request(crater_hub, f"users/{name}", "POST")
            assert r.code == 201, r
            r = await api_request(crater_hub, f"users/{name}/tokens", "POST", {"note": "test"})
            tokens[name] = r.data["token"]
        await spawn(crater_hub, "ray-alice", {"profile": "cpu"})
        return tokens

    async def teardown():
        for name in names:
            await stop_server(crater_hub, name)
            assert (await api_request(crater_hub, f"users/{name}", "DELETE")).code == 204

    yield asyncio.run(setup())
    asyncio.run(teardown())


async def ray_api(hub, path="", method="GET", body=None, token=None):
    return await api_request(hub, "crater/ray/clusters" + (f"/{path}" if path else ""), method, body, token)


async def ray_pods(core, name):
    pods = (await core.list_namespaced_pod(NS, label_selector=f"ray.io/cluster={name}")).items
    return [p for p in pods if not p.metadata.deletion_timestamp]


async def test_refusals_name_the_field_or_the_quota(crater_hub, users):
    alice = users["ray-alice"]
    r = await ray_api(crater_hub, method="POST", body={**T4, "workers": 1}, token=alice)
    assert r.code == 400 and "server" in r.data["message"], r  # a user token names no server
    r = await ray_api(crater_hub, method="POST", body={**T4, "workers": -1, "server": ""}, token=alice)
    assert r.code == 400 and "workers" in r.data["message"], r
    r = await ray_api(crater_hub, method="POST", body={**T4, "gpus": 3, "server": ""}, token=alice)
    assert r.code == 400 and "gpus" in r.data["message"], r
    r = await ray_api(crater_hub, method="POST", body={**T4, "server": "nope"}, token=alice)
    assert r.code == 400 and "'nope' is not running" in r.data["message"], r
    r = await ray_api(crater_hub, method="POST", body={**T4, "workers": 5, "server": ""}, token=alice)
    assert r.code == 403, r
    assert r.data["message"] == ("Over quota: 5 more GPUs would exceed your GPU quota: 0 of 4 in use, "
                                 "4 left."), r.data


async def test_a_cluster_becomes_ready_and_only_its_owner_sees_it(crater_hub, users, kube):
    alice, bob = users["ray-alice"], users["ray-bob"]
    began = time.monotonic()
    r = await ray_api(crater_hub, method="POST", body={**T4, "workers": 2, "server": "", "name": "main"},
                      token=alice)
    assert r.code == 201, r
    name = STATE["name"] = r.data["name"]
    assert name == "ray-ray-alice-main" and r.data["owner"] == "ray-alice"

    async def ready():
        got = await ray_api(crater_hub, name, token=alice)
        assert got.code == 200, got  # the create's answer came after the cache had it
        return got.data if got.data["state"] == "ready" else None

    model = await wait_for(ready, timeout=240, interval=1, message="the Ray cluster to be ready")
    MEASURE["create_to_ready_s"] = round(time.monotonic() - began, 1)
    STATE["began"] = began
    assert model["ready_workers"] == 2 and model["gpus"] == 1 and model["accelerator"] == "t4"
    assert len(model["token"]) > 20 and model["lifetime"] == "server" and model["server"] == ""
    listed = (await ray_api(crater_hub, token=alice)).data["clusters"]
    assert [c["name"] for c in listed] == [name]
    # bob: an empty list, a 404 for alice's cluster, on every verb, and on the proxy
    assert (await ray_api(crater_hub, token=bob)).data["clusters"] == []
    for method, body in (("GET", None), ("PATCH", {"workers": 1}), ("DELETE", None)):
        r = await ray_api(crater_hub, name, method, body, token=bob)
        assert r.code == 404, (method, r)
    r = await request(f"{crater_hub.url}/hub/crater/ray/{name}/dashboard/api/version", token=bob)
    assert r.code == 404
    # the admin sees it, without its token
    everyone = (await ray_api(crater_hub, "?all=1")).data
    seen = [c for c in everyone["clusters"] if c["name"] == name]
    assert seen and "token" not in seen[0]
    core, _ = kube
    assert len(await ray_pods(core, name)) == 3


async def test_a_job_through_the_hubs_proxy_runs_a_gpu_task_on_each_worker(crater_hub, users, kube):
    name, alice = STATE["name"], users["ray-alice"]
    r = await request(f"{crater_hub.url}/hub/crater/ray/{name}/dashboard/api/version")
    assert r.code == 403  # no hub credentials: refused before the head is asked
    jobs = JobSubmissionClient(f"{crater_hub.url}/hub/crater/ray/{name}/dashboard",
                               headers={"Authorization": f"token {alice}"})
    job_id = await asyncio.to_thread(jobs.submit_job, entrypoint=f'python -c "{JOB}"')

    async def finished():
        status = await asyncio.to_thread(jobs.get_job_status, job_id)
        return status if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED) else None

    status = await wait_for(finished, timeout=240, interval=1, message="the Ray job to finish")
    MEASURE["create_to_first_job_result_s"] = round(time.monotonic() - STATE["began"], 1)
    logs = await asyncio.to_thread(jobs.get_job_logs, job_id)
    assert status == JobStatus.SUCCEEDED, logs
    result = json.loads(next(line for line in logs.splitlines() if line.startswith("RESULT "))[7:])
    core, _ = kube
    workers = {p.metadata.name: json.loads(p.metadata.annotations["localkube.crater.io/devices"])
               for p in await ray_pods(core, name) if p.metadata.labels["ray.io/node-type"] == "worker"}
    assert sorted(host for host, _ in result) == sorted(workers)
    for host, cuda_visible in result:
        assert [cuda_visible] == workers[host]["nvidia.com/gpu"]
    MEASURE["job_result"] = result


async def test_quota_counts_the_cluster_and_scaling_down_frees_a_worker(crater_hub, users, kube):
    name, alice = STATE["name"], users["ray-alice"]
    r = await ray_api(crater_hub, method="POST", body={**T4, "workers": 3, "server": ""}, token=alice)
    assert r.code == 403 and "2 of 4 in use" in r.data["message"], r
    r = await ray_api(crater_hub, name, "PATCH", {"workers": 5}, token=alice)
    assert r.code == 403 and "exceed your GPU quota" in r.data["message"], r
    r = await ray_api(crater_hub, name, "PATCH", {"workers": "one"}, token=alice)
    assert r.code == 400 and "workers" in r.data["message"], r
    r = await ray_api(crater_hub, name, "PATCH", {"workers": 1}, token=alice)
    assert r.code == 200 and r.data["workers"] == 1, r
    core, _ = kube

    async def one_worker():
        got = (await ray_api(crater_hub, name, token=alice)).data
        pods = await ray_pods(core, name)
        return got["state"] == "ready" and got["ready_workers"] == 1 and len(pods) == 2

    await wait_for(one_worker, timeout=120, interval=1, message="one worker left")


async def test_deleting_the_cluster_removes_its_pods_and_service(crater_hub, users, kube):
    name, alice = STATE["name"], users["ray-alice"]
    r = await ray_api(crater_hub, name, "DELETE", token=alice)
    assert r.code == 204, r
    core, _ = kube

    async def gone():
        services = (await core.list_namespaced_service(NS)).items
        return (not await ray_pods(core, name)
                and not [s for s in services if s.metadata.name == f"{name}-head-svc"]
                and (await ray_api(crater_hub, name, token=alice)).code == 404)

    await wait_for(gone, timeout=120, interval=1, message="the cluster's pods and Service to go")


NOTEBOOK = textwrap.dedent("""
    import json, os
    from crater_hub.client import ray as cray

    assert "JUPYTERHUB_API_TOKEN" in os.environ and "KUBECONFIG" not in os.environ
    cluster = cray.new_cluster(workers=0, accelerator=None, profile="cpu", name="bound")
    cluster.wait(timeout=150, poll=1)
    jobs = cluster.job_client().list_jobs()
    print(json.dumps({"name": cluster.name, "server": cluster.info["server"],
                      "listed": [c.name for c in cray.list_clusters()], "jobs": len(jobs),
                      "dashboard": cluster.dashboard_url}))
""")


async def test_the_client_in_a_notebook_makes_a_cluster_that_goes_when_the_server_stops(
        crater_hub, users, kube):
    """The notebook client in a kernel of alice's server, with the server's own token (which
    binds the cluster to this server): a head-only cluster, ready, its Jobs API through the
    hub's proxy; then the server stops and takes the cluster along."""
    printed = await run_in_kernel(crater_hub, "ray-alice", NOTEBOOK, timeout=200)
    result = json.loads(printed.strip().splitlines()[-1])
    name = result["name"]
    assert result["server"] == "" and result["listed"] == [name] and result["jobs"] == 0, result
    assert result["dashboard"].endswith(f"/hub/crater/ray/{name}/dashboard"), result
    alice = users["ray-alice"]
    _, custom = kube
    rc = await custom.get_namespaced_custom_object("ray.io", "v1", NS, "rayclusters", name)
    owner = rc["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "Pod" and owner["name"].startswith("jupyter-ray")
    await stop_server(crater_hub, "ray-alice")
    core, _ = kube

    async def gone():
        return (not await ray_pods(core, name)
                and (await ray_api(crater_hub, name, token=alice)).code == 404)

    await wait_for(gone, timeout=120, interval=1, message="the server's cluster to go with it")
