"""The one-click Ray profile through the real hub on localkube, with real Ray (one small cluster
for the module: one T4 worker).

A hub with the demo profiles plus a ``kind: ray`` profile (workers 1 or 8, one T4 each; the demo
quota is 4 GPUs). An 8-worker spawn is refused with the quota's numbers and leaves nothing
behind (no pod, no cluster, no server record, the quota free: the next spawn passes); a
1-worker spawn through the REST API starts the server and its RayCluster, owned by the server's
pod, with ``RAY_ADDRESS``/``RAY_JOB_HEADERS``/``CRATER_RAY_CLUSTER`` in the server; ``ray job
submit`` in a shell of the server pod (a terminal's view: no arguments but the entrypoint) runs a
job on the worker's GPU through the hub; the dashboard answers through the hub for the owner
and is a 404 for another user; stopping the server deletes the cluster. Timings print as
``RAY-PROFILE-MEASURE`` lines (``-s``).
"""

import asyncio
import html
import json
import os
import time
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import pytest
from tornado.httpclient import AsyncHTTPClient

from tests.helpers import wait_for

from ..client.test_client_in_server import run_in_kernel
from ..contract.conftest import kubectl_binary
from .conftest import crater_file, install_kuberay_crd
from .hub import (
    HubProcess,
    api_request,
    progress_events,
    request,
    request_spawn,
    server_of,
    stop_server,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="Ray binds wildcard ports: pods need their own network namespace"),
]
pytest.importorskip("ray", reason="the test extra installs ray[default]")

NS = "default"
RAY_PROFILE = {
    "slug": "ray", "display_name": "Ray cluster", "kind": "ray", "ray": {"workers": [1, 8]},
    "description": "A notebook server and a Ray cluster of T4 workers, stopped together.",
    "cpu": {"guarantee": 0.5, "limit": 2}, "memory": {"guarantee": "1Gi", "limit": "4Gi"},
    "accelerators": [{"accelerator": "t4", "counts": [1]}],
}
ALICE, BOB = "rayp-alice", "rayp-bob"
MEASURE = {}
STATE = {}
JOB = ("import json, os, socket, ray; ray.init(); "
       "f = ray.remote(num_gpus=1)(lambda: (socket.gethostname(), os.environ.get('CUDA_VISIBLE_DEVICES'))); "
       "print('RESULT ' + json.dumps(ray.get(f.remote())))")


@pytest.fixture(scope="module")
def ray_hub(e2e_dir, localkube):
    """A hub of its own: the demo settings and a Ray profile; KubeRay's CRD in the localkube."""
    install_kuberay_crd(localkube)
    state = e2e_dir / "ray-profile-hub"
    crater_file(state / "crater.yaml", profiles=[RAY_PROFILE])
    process = HubProcess(state, localkube.kubeconfig, slow_spawn_timeout=10,
                         env={"CRATER_CONFIG_FILE": str(state / "crater.yaml")}).start()

    async def users():
        tokens = {}
        for name in (ALICE, BOB):
            assert (await api_request(process, f"users/{name}", "POST")).code == 201
            r = await api_request(process, f"users/{name}/tokens", "POST", {"note": "ray profile"})
            tokens[name] = r.data["token"]
        return tokens

    STATE["tokens"] = asyncio.run(users())
    yield process

    async def teardown():
        for name in (ALICE, BOB):
            await stop_server(process, name)
            await api_request(process, f"users/{name}", "DELETE")

    try:
        asyncio.run(teardown())
    finally:
        process.stop()
        for line in (f"RAY-PROFILE-MEASURE {k}: {v}" for k, v in MEASURE.items()):
            print(line)


async def clusters_of(custom, owner):
    found = await custom.list_namespaced_custom_object("ray.io", "v1", NS, "rayclusters")
    return [rc for rc in found["items"]
            if (rc["metadata"].get("annotations") or {}).get("crater.io/owner-name") == owner
            and not rc["metadata"].get("deletionTimestamp")]


async def in_server(localkube, user, script, timeout=120):
    """``sh -c script`` in ``user``'s server pod, as a terminal there would run it: (rc, output)."""
    proc = await asyncio.create_subprocess_exec(
        kubectl_binary(), "--kubeconfig", str(localkube.kubeconfig), "exec", f"jupyter-{user}", "--",
        "sh", "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode()


async def signed_in(hub, user):
    """``fetch(path, **kwargs)`` as ``user``'s browser after signing in (the demo's
    DummyAuthenticator): cookies kept, the form's ``_xsrf`` added to form posts."""
    http, jar = AsyncHTTPClient(), SimpleCookie()

    async def fetch(path, form=None, **kwargs):
        cookie = "; ".join(f"{k}={m.value}" for k, m in jar.items())
        if form is not None:
            kwargs.update(method="POST", body=urlencode({**form, "_xsrf": jar["_xsrf"].value}, doseq=True))
        r = await http.fetch(f"{hub.url}{path}", headers={"Cookie": cookie}, follow_redirects=False,
                             raise_error=False, **kwargs)
        for header in r.headers.get_list("Set-Cookie"):
            jar.load(header)
        return r

    await fetch("/hub/login")
    r = await fetch("/hub/login", form={"username": user, "password": "crater"})
    assert r.code == 302, r.code
    return fetch


async def home_page(hub, user):
    r = await (await signed_in(hub, user))("/hub/home")
    assert r.code == 200, r.code
    return r.body.decode()


async def test_an_over_quota_ray_spawn_is_refused_with_nothing_left_behind(ray_hub, kube):
    core, custom = kube
    r = await request_spawn(ray_hub, ALICE, {"profile": "ray", "workers": 3})
    assert r.code == 400 and r.data["message"] == \
        "workers must be one of 1, 8 in profile 'ray', got 3", r
    r = await request_spawn(ray_hub, ALICE, {"profile": "ray", "workers": 8})
    assert r.code == 403, r
    assert r.data["message"] == ("Over quota: 8 more GPUs would exceed your GPU quota: 0 of 4 in use, "
                                 "4 left."), r.data
    # the spawn form: the Ray profile's workers field, refused the same way
    fetch = await signed_in(ray_hub, ALICE)
    form = (await fetch(f"/hub/spawn/{ALICE}")).body.decode()
    assert 'name="profile-option-ray--workers"' in form and "Ray workers" in form
    r = await fetch(f"/hub/spawn/{ALICE}", form={
        "profile": "ray", "profile-option-ray--accelerator": "t4", "profile-option-ray--gpus": "1",
        "profile-option-ray--workers": "8"})
    assert "Over quota: 8 more GPUs would exceed your GPU quota: 0 of 4 in use, 4 left." in \
        html.unescape(r.body.decode()), (r.code, r.body[-2000:])
    assert await server_of(ray_hub, ALICE) is None
    pods = (await core.list_namespaced_pod(NS, label_selector="hub.jupyter.org/username=" + ALICE)).items
    assert [p.metadata.name for p in pods if not p.metadata.deletion_timestamp] == []
    assert await clusters_of(custom, ALICE) == []
    # the refused spawn gave back what it reserved: the whole quota is still free
    profiles = (await api_request(ray_hub, "crater/profiles", token=STATE["tokens"][ALICE])).data
    assert profiles["quota"]["gpus"] == 4, profiles["quota"]


async def test_the_ray_profile_starts_the_server_and_its_cluster_in_one_spawn(ray_hub, kube, localkube):
    core, custom = kube
    alice = STATE["tokens"][ALICE]
    began = time.monotonic()
    r = await request_spawn(ray_hub, ALICE, {"profile": "ray", "workers": 1})
    assert r.code in (201, 202), r
    events = await progress_events(ray_hub, ALICE)
    assert events and events[-1].get("ready"), events
    MEASURE["spawn_to_server_ready_s"] = round(time.monotonic() - began, 1)
    [rc] = await clusters_of(custom, ALICE)
    name = STATE["name"] = rc["metadata"]["name"]
    pod = await core.read_namespaced_pod(f"jupyter-{ALICE}", NS)
    assert rc["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name,
                                                  "uid": pod.metadata.uid, "blockOwnerDeletion": False}]
    env = {e.name: e.value for e in pod.spec.containers[0].env or []}
    assert env["CRATER_RAY_CLUSTER"] == name
    assert env["RAY_ADDRESS"].endswith(f"/hub/crater/ray/{name}/dashboard"), env["RAY_ADDRESS"]
    assert json.loads(env["RAY_JOB_HEADERS"]) == {"Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}"}
    # the server has no GPU; the worker has the profile's T4, CPU and memory
    assert "nvidia.com/gpu" not in (pod.spec.containers[0].resources.limits or {})

    async def ready():
        got = await api_request(ray_hub, f"crater/ray/clusters/{name}", token=alice)
        assert got.code == 200, got
        return got.data if got.data["state"] == "ready" else None

    model = await wait_for(ready, timeout=240, interval=1, message="the Ray profile's cluster to be ready")
    MEASURE["spawn_to_cluster_ready_s"] = round(time.monotonic() - began, 1)
    STATE["began"] = began
    assert (model["workers"], model["ready_workers"], model["accelerator"], model["gpus"]) == (1, 1, "t4", 1)
    assert (model["profile"], model["lifetime"], model["server"]) == ("ray", "server", "")
    workers = (await core.list_namespaced_pod(
        NS, label_selector=f"ray.io/cluster={name},ray.io/node-type=worker")).items
    limits = workers[0].spec.containers[0].resources.limits
    assert (limits["nvidia.com/gpu"], limits["cpu"], limits["memory"]) == ("1", "2", "4Gi")
    # the quota counts the cluster with the server (1 of 4 GPUs)
    quota = (await api_request(ray_hub, "crater/profiles", token=alice)).data["quota"]
    assert quota["gpus"] == 3, quota
    # the home page shows the server's cluster and links its dashboard through the hub
    page = await home_page(ray_hub, ALICE)
    assert f'data-crater-ray-cluster="{name}"' in page
    assert f'href="/hub/crater/ray/{name}/dashboard/"' in page


def readme_blocks():
    """The README's Ray-profile examples: the terminal's commands and the notebook's code."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("**The Ray profile**"):]
    shell = section[section.index("```sh\n") + 6:].split("```", 1)[0]
    python = section[section.index("```python\n") + 10:].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in shell.splitlines() if line.strip()], python


async def test_ray_job_submit_in_a_terminal_of_the_server_runs_on_the_workers_gpu(ray_hub, kube, localkube):
    name = STATE["name"]
    # the README's terminal commands, as written (RAY_ADDRESS and RAY_JOB_HEADERS come from the
    # server's env); the status is asked again until the job is done
    submit, status, logs = readme_blocks()[0]
    assert submit.startswith("ray job submit --submission-id hello -- ") and status == "ray job status hello"
    # then a job of our own that reports where its GPU task ran
    script = f"""
        set -e
        cd /tmp
        wait_for() {{
            end=$(( $(date +%s) + 180 ))
            until ray job status $1 > status.out 2>&1 && grep -Eq "Job '$1' (succeeded|failed|stopped)" status.out; do
                [ $(date +%s) -lt $end ] || {{ echo TIMEOUT; cat status.out; ray job logs $1 2>&1; exit 3; }}
                sleep 1
            done
            cat status.out
        }}
        {submit}
        wait_for hello
        {logs} 2>&1
        ray job submit --no-wait --submission-id profile-job -- python -c "{JOB}"
        wait_for profile-job
        ray job logs profile-job 2>&1
    """
    rc, out = await in_server(localkube, ALICE, script, timeout=300)
    MEASURE["spawn_to_first_job_result_s"] = round(time.monotonic() - STATE["began"], 1)
    assert rc == 0 and "Job 'hello' succeeded" in out and "Job 'profile-job' succeeded" in out, out
    assert "'GPU': 1.0" in out, out  # the README's job sees the cluster: one worker's T4
    host, cuda_visible = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    core, _ = kube
    [worker] = (await core.list_namespaced_pod(
        NS, label_selector=f"ray.io/cluster={name},ray.io/node-type=worker")).items
    devices = json.loads(worker.metadata.annotations["localkube.crater.io/devices"])["nvidia.com/gpu"]
    assert host == worker.metadata.name and [cuda_visible] == devices, (host, cuda_visible, devices)


async def test_the_readmes_notebook_example_finds_the_profiles_cluster(ray_hub):
    code = readme_blocks()[1] + "\nprint(cluster.name, cluster.state, job_id.startswith('raysubmit_'))\n"
    printed = await run_in_kernel(ray_hub, ALICE, code, timeout=120)
    assert printed.split()[-3:] == [STATE["name"], "ready", "True"], printed


async def test_the_dashboard_answers_through_the_hub_for_the_owner_only(ray_hub):
    name, tokens = STATE["name"], STATE["tokens"]
    url = f"{ray_hub.url}/hub/crater/ray/{name}/dashboard/api/version"
    r = await request(url, token=tokens[ALICE])
    assert r.code == 200 and r.data["ray_version"], r
    r = await request(url, token=tokens[BOB])
    assert r.code == 404, r
    r = await api_request(ray_hub, f"crater/ray/clusters/{name}", token=tokens[BOB])
    assert r.code == 404, r


async def test_stopping_the_server_deletes_its_cluster(ray_hub, kube):
    name, alice = STATE["name"], STATE["tokens"][ALICE]
    core, custom = kube
    began = time.monotonic()
    await stop_server(ray_hub, ALICE)

    async def gone():
        pods = (await core.list_namespaced_pod(NS, label_selector=f"ray.io/cluster={name}")).items
        return (not [p for p in pods if not p.metadata.deletion_timestamp]
                and await clusters_of(custom, ALICE) == []
                and (await api_request(ray_hub, f"crater/ray/clusters/{name}", token=alice)).code == 404)

    await wait_for(gone, timeout=120, interval=1, message="the Ray profile's cluster to go with its server")
    MEASURE["stop_to_cluster_gone_s"] = round(time.monotonic() - began, 1)
    quota = (await api_request(ray_hub, "crater/profiles", token=alice)).data["quota"]
    assert quota["gpus"] == 4, quota
