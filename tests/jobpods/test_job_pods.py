"""Job pods on the real hub and localkube: as safe as notebook pods, shaped by the profile, with
the owner's home — read back from the API and from what the job itself prints."""

import asyncio
import json
import textwrap

from kubernetes_asyncio.client import ApiClient
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from ..client.test_client_in_server import run_in_kernel
from ..e2e.hub import request, spawn, stop_server
from ..helpers import wait_for
from ..queue.helpers import logs, submit, wait_state
from .conftest import HOMELESS_NS

NS = "default"  # the servers' namespace in jupyterhub_config.py, and so the jobs'
TOLERATION = {"key": "crater.io/test", "operator": "Exists", "effect": "NoSchedule"}


def as_dict(obj):
    return ApiClient().sanitize_for_serialization(obj)


async def job_pod(core, job_id, namespace=NS, timeout=60):
    """The pod of a job, once bound to a node, as the API returns it."""
    async def bound():
        pods = await core.list_namespaced_pod(namespace, label_selector=f"crater.io/job-id={job_id}")
        found = [as_dict(p) for p in pods.items if p.spec.node_name]
        return found[0] if found else None
    return await wait_for(bound, timeout=timeout, interval=0.1, message=f"job {job_id}'s pod")


def env_of(pod):
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env", [])}


async def server_pod(core, user):
    return as_dict(await core.read_namespaced_pod(f"jupyter-{user}", NS))


async def test_a_jobs_pod_is_as_safe_as_a_notebooks_and_shaped_by_its_profile(hub, make_user, core):
    """(e) securityContext of PodSecurity restricted, z2jh's uid/fsGroup, no service-account
    token, the profile's node selector and tolerations; the home claim made as KubeSpawner would."""
    user, token = await make_user()
    job = await submit(hub, token, profile="pinned", command="echo NV=$NVIDIA_VISIBLE_DEVICES; sleep 300")
    await wait_state(hub, token, job["id"], "running")
    pod = await job_pod(core, job["id"])
    spec = pod["spec"]
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 100,
                                       "seccompProfile": {"type": "RuntimeDefault"}}
    container = spec["containers"][0]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert spec["automountServiceAccountToken"] is False
    assert not [v for v in spec.get("volumes", []) if "projected" in v or "secret" in v]
    assert spec["nodeSelector"] == {"kubernetes.io/hostname": "cpu-0"}
    assert TOLERATION in spec["tolerations"]
    assert spec["nodeName"] == "cpu-0"
    assert pod["metadata"]["labels"]["hub.jupyter.org/network-access-hub"] == "true"
    # the default server's home, though the user never started one: claim-<user>, made now
    assert {"name": "home", "persistentVolumeClaim": {"claimName": f"claim-{user}"}} in spec["volumes"]
    assert {"name": "home", "mountPath": "/home/jovyan"} in container["volumeMounts"]
    assert container["workingDir"] == "/home/jovyan"
    claim = as_dict(await core.read_namespaced_persistent_volume_claim(f"claim-{user}", NS))
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert claim["metadata"]["labels"]["component"] == "singleuser-storage"
    code, _, text = await logs(hub, token, job["id"])
    assert code == 200 and "NV=void" in text


async def test_pods_without_nvidia_gpus_get_nvidia_visible_devices_void(hub, make_user, core):
    """(d) servers on every spawn (no override leaking between spawns) and jobs; a GPU pod gets
    the devices the plugin grants instead."""
    user, token = await make_user()
    seen = []
    for options in ({"profile": "cpu"}, {"profile": "gpu", "accelerator": "t4", "gpus": 1},
                    {"profile": "cpu"}):
        await spawn(hub, user, options)
        seen.append(env_of(await server_pod(core, user)).get("NVIDIA_VISIBLE_DEVICES"))
        await stop_server(hub, user)
    assert seen == ["void", None, "void"]

    command = "echo NV=$NVIDIA_VISIBLE_DEVICES"
    cpu = await submit(hub, token, profile="cpu", command=command)
    gpu = await submit(hub, token, profile="gpu", accelerator="t4", gpus=1, command=command)
    printed = []
    for job in (cpu, gpu):
        done = await wait_state(hub, token, job["id"], ("succeeded", "failed"), timeout=90)
        assert done["state"] == "succeeded", done
        printed.append((await logs(hub, token, job["id"]))[2].strip())
    assert printed[0] == "NV=void"
    assert printed[1].removeprefix("NV=").isdigit(), printed  # the device id localkube granted


async def test_a_job_follows_a_readwriteonce_home_to_the_node_of_the_running_server(
        hub, make_user, core):
    """The server runs on cpu-0 (its profile pins it); a CPU job, free to go anywhere, must go
    there: its home is attached to that node."""
    user, token = await make_user()
    await spawn(hub, user, {"profile": "pinned"})
    job = await submit(hub, token, profile="cpu", command="sleep 300")
    pod = await job_pod(core, job["id"])
    terms = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["cpu-0"]}]}]
    assert pod["spec"]["nodeName"] == "cpu-0"
    assert "nodeSelector" not in pod["spec"] or "kubernetes.io/hostname" not in pod["spec"]["nodeSelector"]


TRAIN = textwrap.dedent('''
    import pathlib
    pathlib.Path("train.py").write_text(
        "import os, pathlib\\n"
        "data = pathlib.Path('data.txt').read_text().split()\\n"
        "print('trained on', len(data), 'samples; GPUs:', os.environ.get('NVIDIA_VISIBLE_DEVICES'))\\n"
        "pathlib.Path('model.txt').write_text('weights')\\n")
    pathlib.Path("data.txt").write_text("a b c d e")

    from crater_hub import client
    job = client.submit("python train.py", profile="gpu", accelerator="t4", gpus=1)
    done = client.wait(job.id, timeout=150, poll=1)
    print(json.dumps({"state": done.state, "exit_code": done.exit_code, "node": done.extra.get("node"),
                      "logs": client.logs(done.id),
                      "model": pathlib.Path("model.txt").read_text()}))
''')


async def test_the_readme_example_trains_on_the_home_the_notebook_wrote(hub, make_user, core):
    """(g) train.py written in the home from the user's server, submitted with the notebook
    client, its output read back — and the file it wrote seen by the notebook."""
    user, _ = await make_user()
    await spawn(hub, user, {"profile": "gpu", "accelerator": "t4", "gpus": 1})
    printed = await run_in_kernel(hub, user, "import json\n" + TRAIN, timeout=200)
    result = json.loads(printed.strip().splitlines()[-1])
    assert (result["state"], result["exit_code"]) == ("succeeded", 0), result
    assert result["logs"].startswith("trained on 5 samples; GPUs: "), result
    assert "void" not in result["logs"]
    assert result["model"] == "weights"
    assert result["node"] == (await server_pod(core, user))["spec"]["nodeName"]


async def test_job_home_never_gives_jobs_no_home(homeless_hub, make_homeless_user, core):
    user, token = await make_homeless_user()
    job = await submit(homeless_hub, token, profile="cpu", command="sleep 300")
    pod = await job_pod(core, job["id"], HOMELESS_NS)
    assert not pod["spec"].get("volumes")
    assert "workingDir" not in pod["spec"]["containers"][0]
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000  # shaped all the same
    claims = await core.list_namespaced_persistent_volume_claim(HOMELESS_NS)
    assert [c.metadata.name for c in claims.items] == []
    there = await submit(homeless_hub, token, profile="cpu", command="sleep 300", workdir="/tmp/run")
    pod = await job_pod(core, there["id"], HOMELESS_NS)
    assert pod["spec"]["containers"][0]["workingDir"] == "/tmp/run"


async def run_in_terminal(hub, user, line, until, timeout):
    """Type ``line`` into a new JupyterLab terminal of ``user``'s server (terminals REST API and
    terminado's websocket, through the proxy); the output once ``until`` appears in it."""
    server = f"{hub.url}/user/{user}/"
    r = await request(server + "api/terminals", "POST", {}, token=hub.admin_token)
    assert r.code == 200, r
    name = r.data["name"]
    ws = await websocket_connect(HTTPRequest(
        server.replace("http", "ws", 1) + f"terminals/websocket/{name}",
        headers={"Authorization": f"token {hub.admin_token}"}))
    out = []
    try:
        ws.write_message(json.dumps(["stdin", line + "\r"]))

        async def until_seen():
            while until not in "".join(out):
                raw = await ws.read_message()
                assert raw is not None, f"the terminal closed; it said: {''.join(out)}"
                kind, *payload = json.loads(raw)
                if kind == "stdout":
                    out.append(payload[0])

        await asyncio.wait_for(until_seen(), timeout)
    except TimeoutError:
        raise AssertionError(f"no {until!r} in the terminal; it said: {''.join(out)}") from None
    finally:
        ws.close()
        await request(server + f"api/terminals/{name}", "DELETE", token=hub.admin_token)
    return "".join(out)


async def test_the_notebook_client_works_from_a_jupyterlab_terminal(hub, make_user):
    """A terminal has the image's ``python`` (not the machine's), and crater_hub imports in it."""
    user, _ = await make_user()
    await spawn(hub, user, {"profile": "cpu"})
    line = ("python -c \"from crater_hub import client; j = client.submit('echo hi from a job', "
            "profile='cpu'); d = client.wait(j.id, timeout=60, poll=1); "
            "print('RESULT', d.state, client.logs(d.id).strip().replace(' ', '_'))\"")
    said = await run_in_terminal(hub, user, line, "RESULT succeeded hi_from_a_job", timeout=90)
    assert "command not found" not in said and "ModuleNotFoundError" not in said


async def test_a_job_the_servers_node_cannot_run_fails_saying_why(hub, make_user):
    """A T4 job while the ReadWriteOnce home is attached to the CPU node: never runnable there,
    so it fails at once with the reason and what to do, instead of waiting forever."""
    user, token = await make_user()
    await spawn(hub, user, {"profile": "pinned"})
    job = await submit(hub, token, profile="gpu", accelerator="t4", gpus=1, command="echo never")
    done = await wait_state(hub, token, job["id"], ("failed", "succeeded", "running"), timeout=60)
    assert done["state"] == "failed", done
    assert "ReadWriteOnce" in done["reason"] and "cpu-0" in done["reason"], done


async def test_a_readwritemany_home_leaves_the_job_free_to_run_anywhere(hub, make_user, core):
    """The same as above with an NFS-like home (the claim, made before the first spawn, is
    ReadWriteMany): no node affinity, and the job lands where the scheduler likes best."""
    user, token = await make_user()
    await core.create_namespaced_persistent_volume_claim(NS, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": f"claim-{user}"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}})
    await spawn(hub, user, {"profile": "pinned"})
    job = await submit(hub, token, profile="cpu", command="ls train.py 2>/dev/null; sleep 300")
    pod = await job_pod(core, job["id"])
    assert "affinity" not in pod["spec"]
    assert {"name": "home", "persistentVolumeClaim": {"claimName": f"claim-{user}"}} in pod["spec"]["volumes"]
    assert pod["spec"]["nodeName"] != "cpu-0"  # least allocated: the big A100 node, not the server's
