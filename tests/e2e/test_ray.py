"""Ray clusters through the real hub on localkube, with real Ray, driven from inside real
notebook servers (one 2-worker cluster for the module, plus a head-only one for a second user:
a Ray cluster costs about a gigabyte and 45 s).

alice, in a kernel of her notebook server, with only the server's ``JUPYTERHUB_API_TOKEN``: the
client creates a cluster of two workers with one T4 each and waits for it; submits a Ray job
through the Jobs API (the hub's dashboard proxy, which adds the Ray token) that runs a GPU task
on each worker and returns their device ids — checked against the devices localkube's device
plugin gave the worker pods; follows its logs over the proxied websocket
(``tail_job_logs``: each line arrives as it is printed) and reads them whole; later scales to one
worker and shuts the cluster down, after which its pods and Service are gone. Around that, over
REST: refusals naming the field or the quota, the cluster counted in the quota with servers, and
bob, with a head-only cluster of his own running beside alice's: neither sees the other's
cluster (404 on the REST API and on the dashboard proxy), and from bob's notebook server pod,
alice's head (its dashboard, and its GCS through ``ray status``) refuses him without alice's Ray
token (no token, or bob's), while the same requests with her token work (so the network is open: the token is what keeps
him out). Stopping bob's server takes his ``server``-lifetime cluster along. Timings and the
idle cluster's memory print as ``RAY-HUB-MEASURE`` lines (``-s``).
"""

import asyncio
import json
import os
import textwrap

import pytest

from tests.helpers import wait_for

from ..client.test_client_in_server import run_in_kernel
from .conftest import install_kuberay_crd
from .hub import api_request, request, spawn, stop_server

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="Ray binds wildcard ports: pods need their own network namespace"),
]
ray = pytest.importorskip("ray", reason="the test extra installs ray[default]")

NS = "default"
T4 = {"profile": "gpu", "accelerator": "t4", "gpus": 1}
MEASURE = {}
STATE = {}
#: the Ray job: one GPU task per worker (both held at once, spread), their hostnames and
#: CUDA_VISIBLE_DEVICES printed; then, 4 s later, a last line (to see that logs stream)
JOB = (
    "import json, os, socket, time, ray; ray.init(); "
    "f = ray.remote(num_gpus=1, scheduling_strategy='SPREAD')(lambda: time.sleep(2) or "
    "(socket.gethostname(), os.environ.get('CUDA_VISIBLE_DEVICES'))); "
    "print('RESULT ' + json.dumps(sorted(ray.get([f.remote() for _ in range(2)]))), flush=True); "
    "time.sleep(4); print('END', flush=True)"
)


@pytest.fixture(scope="module")
def kuberay(localkube):
    """KubeRay's CRD installed in the session's localkube; the module's timings printed after."""
    install_kuberay_crd(localkube)
    yield
    for line in (f"RAY-HUB-MEASURE {k}: {v}" for k, v in MEASURE.items()):
        print(line)


@pytest.fixture(scope="module")
def users(crater_hub, kuberay):
    """alice and bob, each with a running CPU server and a token; removed after the module.
    (Synchronous: each step runs on a loop of its own, as tests' loops are per test.)"""
    names = ("ray-alice", "ray-bob")

    async def setup():
        tokens = {}
        for name in names:
            r = await api_request(crater_hub, f"users/{name}", "POST")
            assert r.code == 201, r
            r = await api_request(crater_hub, f"users/{name}/tokens", "POST", {"note": "test"})
            tokens[name] = r.data["token"]
            await spawn(crater_hub, name, {"profile": "cpu"})
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


def pss_mib(pod_names):
    """The proportional set size of every process of these localkube pods, in MiB (localkube
    marks each container's processes with its sandbox directory, ``.../pods/<ns>_<pod>_<uid>/``)."""
    marks = [f"/pods/{NS}_{name}_".encode() for name in pod_names]
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                marker = next((v for v in f.read().split(b"\0") if v.startswith(b"LOCALKUBE_CONTAINER=")), b"")
            if not any(m in marker for m in marks):
                continue
            with open(f"/proc/{entry.name}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            continue
    return round(total / 1024)


CREATE = textwrap.dedent("""
    import json, os, time
    from crater_hub.client import ray as cray

    assert "JUPYTERHUB_API_TOKEN" in os.environ and "KUBECONFIG" not in os.environ
    began = time.time()
    cluster = cray.new_cluster(workers=2, accelerator="t4", gpus=1, profile="gpu", name="main")
    first = cluster.state
    cluster.wait(timeout=300, poll=1)
    print(json.dumps({"name": cluster.name, "began": began, "ready_s": time.time() - began,
                      "first_state": first, "info": cluster.info,
                      "listed": [c.name for c in cray.list_clusters()],
                      "dashboard": cluster.dashboard_url}))
""")

RUN_JOB = textwrap.dedent("""
    import asyncio, json, threading, time
    from crater_hub.client import ray as cray

    cluster = cray.get_cluster({name!r})
    jobs = cluster.job_client()
    job_id = jobs.submit_job(entrypoint={entrypoint!r})
    chunks = []

    def follow():  # the kernel's own loop is running: follow the websocket on another thread
        async def tail():
            async for text in jobs.tail_job_logs(job_id):
                chunks.append((time.time(), text))
        asyncio.run(tail())

    thread = threading.Thread(target=follow)
    thread.start()
    thread.join(timeout=300)
    assert not thread.is_alive(), "tail_job_logs did not end with the job"
    print(json.dumps({{"job_id": job_id, "status": str(jobs.get_job_status(job_id)),
                      "chunks": chunks, "logs": jobs.get_job_logs(job_id)}}))
""")


def line_of(text, prefix):
    return next((line for line in text.splitlines() if line.startswith(prefix)), None)


async def test_the_notebook_client_makes_a_two_worker_cluster(crater_hub, users, kube):
    """new_cluster(workers=2, accelerator="t4", gpus=1) and wait(), from alice's notebook."""
    printed = await run_in_kernel(crater_hub, "ray-alice", CREATE, timeout=360)
    result = json.loads(printed.strip().splitlines()[-1])
    name = STATE["name"] = result["name"]
    STATE["began"] = result["began"]
    MEASURE["notebook_new_cluster_to_ready_s"] = round(result["ready_s"], 1)
    info = result["info"]
    assert name == "ray-ray-alice-main" and result["listed"] == [name], result
    assert result["first_state"] in ("starting", "scaling"), result
    assert (info["state"], info["workers"], info["ready_workers"]) == ("ready", 2, 2), info
    assert (info["accelerator"], info["gpus"], info["server"], info["lifetime"]) == ("t4", 1, "", "server")
    assert result["dashboard"].endswith(f"/hub/crater/ray/{name}/dashboard"), result
    core, custom = kube
    pods = await ray_pods(core, name)
    assert sorted(p.metadata.labels["ray.io/node-type"] for p in pods) == ["head", "worker", "worker"]
    rc = await custom.get_namespaced_custom_object("ray.io", "v1", NS, "rayclusters", name)
    owner = rc["metadata"]["ownerReferences"][0]  # bound to the server that asked
    assert owner["kind"] == "Pod" and owner["name"].startswith("jupyter-ray")
    MEASURE["idle_cluster_pss_mib"] = pss_mib([p.metadata.name for p in pods])


async def test_a_job_from_the_notebook_runs_a_gpu_task_on_each_worker_and_its_logs_stream(
        crater_hub, users, kube):
    """submit_job through the hub's proxy; tail_job_logs over the proxied websocket gets each
    line as it is printed (the last one 4 s after the result); get_job_logs has them all."""
    name = STATE["name"]
    code = RUN_JOB.format(name=name, entrypoint=f'python -u -c "{JOB}"')
    printed = await run_in_kernel(crater_hub, "ray-alice", code, timeout=360)
    result = json.loads(printed.strip().splitlines()[-1])
    assert result["status"] == "SUCCEEDED", result
    got_result = next(t for t, text in result["chunks"] if "RESULT " in text)
    got_end = next(t for t, text in result["chunks"] if "END" in text.splitlines())
    assert got_end - got_result > 2, result["chunks"]  # streamed, not delivered at the end
    MEASURE["notebook_new_cluster_to_first_job_result_s"] = round(got_result - STATE["began"], 1)
    tailed = "".join(text for _, text in result["chunks"])
    assert line_of(tailed, "RESULT ") == line_of(result["logs"], "RESULT ") is not None, result
    assert "END" in result["logs"].splitlines()
    devices = json.loads(line_of(result["logs"], "RESULT ")[len("RESULT "):])
    core, _ = kube
    workers = {p.metadata.name: json.loads(p.metadata.annotations["localkube.crater.io/devices"])
               for p in await ray_pods(core, name) if p.metadata.labels["ray.io/node-type"] == "worker"}
    assert sorted(host for host, _ in devices) == sorted(workers)  # one task on each worker
    for host, cuda_visible in devices:
        assert [cuda_visible] == workers[host]["nvidia.com/gpu"]  # the GPU the plugin gave it
    MEASURE["job_result"] = devices


async def test_the_cluster_counts_in_the_quota_and_others_cannot_see_it(crater_hub, users):
    name, alice, bob = STATE["name"], users["ray-alice"], users["ray-bob"]
    r = await ray_api(crater_hub, method="POST", body={**T4, "workers": 3, "server": ""}, token=alice)
    assert r.code == 403 and "2 of 4 in use" in r.data["message"], r
    r = await ray_api(crater_hub, name, "PATCH", {"workers": 5}, token=alice)
    assert r.code == 403 and "exceed your GPU quota" in r.data["message"], r
    r = await ray_api(crater_hub, name, "PATCH", {"workers": "one"}, token=alice)
    assert r.code == 400 and "workers" in r.data["message"], r
    r = await ray_api(crater_hub, name, "PATCH", {"workers": 1, "gpus": 2}, token=alice)
    assert r.code == 400 and "only workers" in r.data["message"], r
    # bob: an empty list, a 404 for alice's cluster, on every verb, and on the proxy
    assert (await ray_api(crater_hub, token=bob)).data["clusters"] == []
    for method, body in (("GET", None), ("PATCH", {"workers": 1}), ("DELETE", None)):
        r = await ray_api(crater_hub, name, method, body, token=bob)
        assert r.code == 404, (method, r)
    r = await request(f"{crater_hub.url}/hub/crater/ray/{name}/dashboard/api/version", token=bob)
    assert r.code == 404
    r = await request(f"{crater_hub.url}/hub/crater/ray/{name}/dashboard/api/version")
    assert r.code == 403  # no hub credentials: refused before the head is asked
    r = await request(f"{crater_hub.url}/hub/crater/ray/{name}/dashboard/api/version", token=alice)
    assert r.code == 200 and r.data["ray_version"] == ray.__version__, r
    # the admin sees it, without its token
    everyone = (await ray_api(crater_hub, "?all=1")).data
    seen = [c for c in everyone["clusters"] if c["name"] == name]
    assert seen and "token" not in seen[0]


PROBE = textwrap.dedent("""
    import json, os, subprocess, sys, urllib.error, urllib.request

    def status(url, token=None):
        headers = {{"Authorization": f"Bearer {{token}}"}} if token else {{}}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError as e:
            return repr(e)

    url = "http://{ip}:8265/api/jobs/"
    out = {{"none": status(url), "bobs": status(url, {bobs!r}), "alices": status(url, {alices!r})}}

    def gcs(token=None):  # `ray status` against alice's GCS, with no token or with one
        env = {{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}}
        if token:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
        try:
            p = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "status", "--address",
                                "{ip}:6379"], capture_output=True, text=True, timeout=90, env=env)
            return [p.returncode, (p.stdout + p.stderr)[-800:]]
        except subprocess.TimeoutExpired as e:
            return ["timeout", str(e.stdout or "")[-800:]]

    out.update(gcs=gcs(), gcs_bobs=gcs({bobs!r}), gcs_alices=gcs({alices!r}))
    print(json.dumps(out))
""")


async def test_two_users_clusters_run_side_by_side_isolated(crater_hub, users, kube):
    """bob's head-only cluster beside alice's: 404 both ways through the hub; from bob's server
    pod alice's head (dashboard and GCS) refuses him without her token and with his, and answers
    with hers."""
    alice_name, alice, bob = STATE["name"], users["ray-alice"], users["ray-bob"]
    r = await ray_api(crater_hub, method="POST", token=bob, body={
        "profile": "cpu", "accelerator": None, "workers": 0, "server": "", "name": "side"})
    assert r.code == 201, r
    bob_name = STATE["bob"] = r.data["name"]

    async def ready(name, token):
        got = (await ray_api(crater_hub, name, token=token)).data
        return got if got["state"] == "ready" else None

    bobs = await wait_for(lambda: ready(bob_name, bob), timeout=240, interval=1,
                          message="bob's cluster to be ready")
    alices = await ready(alice_name, alice)
    assert alices is not None and alices["token"] != bobs["token"]
    for name, token in ((alice_name, bob), (bob_name, alice)):
        r = await request(f"{crater_hub.url}/hub/crater/ray/{name}/dashboard/api/jobs/", token=token)
        assert r.code == 404, (name, r)
        assert (await ray_api(crater_hub, name, token=token)).code == 404
    r = await request(f"{crater_hub.url}/hub/crater/ray/{bob_name}/dashboard/api/jobs/", token=bob)
    assert r.code == 200, r  # his own, through the hub
    code = PROBE.format(ip=alices["head_ip"], bobs=bobs["token"], alices=alices["token"])
    printed = await run_in_kernel(crater_hub, "ray-bob", code, timeout=320)
    probe = json.loads(printed.strip().splitlines()[-1])
    assert probe["alices"] == 200, probe  # reachable: what refuses is the token
    assert probe["none"] in (401, 403) and probe["bobs"] in (401, 403), probe
    for key in ("gcs", "gcs_bobs"):  # joining her cluster through its GCS: refused
        assert probe[key][0] != 0 and "Active:" not in probe[key][1], probe
    assert probe["gcs_alices"][0] == 0 and "Active:" in probe["gcs_alices"][1], probe
    MEASURE["bob_probing_alices_head"] = {
        k: [v[0], v[1][-240:]] if k.startswith("gcs") else v for k, v in probe.items()}


NOTEBOOK_SCALE = textwrap.dedent("""
    import json, time
    from crater_hub.client import ray as cray

    cluster = cray.get_cluster({name!r})
    began = time.time()
    cluster.scale(1)
    asked = cluster.workers
    cluster.wait(timeout=120, poll=1)
    print(json.dumps({{"asked": asked, "workers": cluster.workers,
                      "ready_workers": cluster.ready_workers, "s": time.time() - began}}))
""")

NOTEBOOK_SHUTDOWN = textwrap.dedent("""
    from crater_hub.client import ray as cray

    with cray.get_cluster({name!r}) as cluster:  # leaving the block shuts it down
        print(cluster.state)
    print(sorted({{c.state for c in cray.list_clusters() if c.name == {name!r}}} - {{"deleting"}}))
""")


async def test_the_notebook_client_scales_to_one_worker(crater_hub, users, kube):
    name = STATE["name"]
    printed = await run_in_kernel(crater_hub, "ray-alice", NOTEBOOK_SCALE.format(name=name), timeout=200)
    result = json.loads(printed.strip().splitlines()[-1])
    assert (result["asked"], result["workers"], result["ready_workers"]) == (1, 1, 1), result
    core, _ = kube
    pods = await ray_pods(core, name)
    assert sorted(p.metadata.labels["ray.io/node-type"] for p in pods) == ["head", "worker"]
    r = await ray_api(crater_hub, method="POST", token=users["ray-alice"],
                      body={**T4, "workers": 4, "server": ""})
    assert r.code == 403 and "1 of 4 in use" in r.data["message"], r  # the freed GPU is free


async def test_the_notebook_client_shuts_the_cluster_down_and_its_pods_and_service_go(
        crater_hub, users, kube):
    name, alice = STATE["name"], users["ray-alice"]
    printed = await run_in_kernel(crater_hub, "ray-alice", NOTEBOOK_SHUTDOWN.format(name=name), timeout=120)
    assert printed.strip().splitlines()[-2:] == ["ready", "[]"], printed
    core, _ = kube

    async def gone():
        services = (await core.list_namespaced_service(NS)).items
        return (not await ray_pods(core, name)
                and not [s for s in services if s.metadata.name == f"{name}-head-svc"]
                and (await ray_api(crater_hub, name, token=alice)).code == 404)

    await wait_for(gone, timeout=120, interval=1, message="the cluster's pods and Service to go")


async def test_a_server_lifetime_cluster_goes_when_its_server_stops(crater_hub, users, kube):
    """bob's cluster is bound to his server (the default lifetime): stopping it takes it along."""
    name, bob = STATE["bob"], users["ray-bob"]
    await stop_server(crater_hub, "ray-bob")
    core, _ = kube

    async def gone():
        services = (await core.list_namespaced_service(NS)).items
        return (not await ray_pods(core, name)
                and not [s for s in services if s.metadata.name == f"{name}-head-svc"]
                and (await ray_api(crater_hub, name, token=bob)).code == 404)

    await wait_for(gone, timeout=120, interval=1, message="the server's cluster to go with it")
