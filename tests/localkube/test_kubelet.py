"""The process kubelet: pods bound to a node really run, as a real kubelet would run them."""

import base64
import ipaddress
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytest_asyncio
import yaml
from kubernetes_asyncio.client import ApiClient
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from crater_hub.localkube import LocalKube
from crater_hub.localkube.images import DEFAULT_TABLE
from crater_hub.localkube.kubelet import Kubelet, log_path
from tests.helpers import wait_for

# A test image whose config has an entrypoint and a cmd, so OCI command/args rules are visible.
ECHOER = {"match": ["example.com/echoer"], "entrypoint": ["sh", "-c"], "cmd": ["echo default-cmd"],
          "home": "/home/echo", "workdir": "/srv"}


ISOLATED = os.geteuid() == 0  # the default mode as root; loopback otherwise
MODES = ["isolated", "loopback"] if ISOLATED else ["loopback"]


@pytest_asyncio.fixture
async def kube(tmp_path):
    """A kubelet in the default mode (isolated as root)."""
    async for k in _kube(tmp_path, None):
        yield k


@pytest_asyncio.fixture(params=MODES)
async def any_kube(tmp_path, request):
    """A kubelet in each mode this machine can run."""
    async for k in _kube(tmp_path, request.param):
        yield k


async def _kube(tmp_path, isolation):
    table = yaml.safe_load(DEFAULT_TABLE.read_text())
    table["images"].insert(0, ECHOER)
    (tmp_path / "images.yaml").write_text(yaml.safe_dump(table))
    lk = LocalKube(state_dir=tmp_path / "state", image_table=tmp_path / "images.yaml", isolation=isolation)
    try:
        lk._bootstrap()
    except (ImportError, OSError):  # no cluster file yet: a namespace is all pods need
        if lk.store.find(res(lk, "namespaces"), None, "default") is None:
            lk.store.create(res(lk, "namespaces"), {"metadata": {"name": "default"}})
    nodes, _ = lk.store.list(res(lk, "nodes"))
    await lk.network.start()
    kubelet = Kubelet(lk)
    kubelet.backoff_base = 0.2
    kubelet.retry_delay = 0.2
    kubelet.start()
    yield SimpleNamespace(lk=lk, store=lk.store, kubelet=kubelet,
                          node=nodes[0]["metadata"]["name"] if nodes else "node-1")
    await kubelet.stop()
    await lk.network.stop()


def res(lk, plural):
    return lk.registry.lookup("", "v1", plural)


def make_pod(kube, name, containers, **spec):
    body = {"metadata": {"name": name, "labels": {"app": "demo"}},
            "spec": {"nodeName": kube.node, "containers": containers, **spec}}
    return kube.store.create(res(kube.lk, "pods"), body, "default")


def get_pod(kube, name):
    return kube.store.find(res(kube.lk, "pods"), "default", name)


async def wait_phase(kube, name, *phases, timeout=10):
    pod = await wait_for(lambda: (p := get_pod(kube, name)) and p["status"].get("phase") in phases and p,
                         timeout=timeout, message=f"pod {name} in {phases}")
    return pod


def read_log(kube, name, container="main", previous=False):
    path = log_path(kube.lk, get_pod(kube, name), container, previous)
    return path.read_text() if path.exists() else ""


def pod_events(kube, name):
    items, _ = kube.store.list(res(kube.lk, "events"), "default")
    return [(e["reason"], e["type"], e["message"]) for e in items if e["involvedObject"]["name"] == name]


def alive(pid):
    """Whether a process exists and is not a zombie (zombies are dead, awaiting a reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def sh(name, script, **extra):
    return {"name": name, "image": "busybox", "command": ["sh", "-c", script], **extra}


@pytest.mark.asyncio
async def test_command_and_args_follow_oci_and_expand_variables(any_kube):
    kube = any_kube
    env = [{"name": "GREETING", "value": "hello"}]
    make_pod(kube, "defaults", [{"name": "main", "image": "example.com/echoer:1"}], restartPolicy="Never")
    make_pod(kube, "args-only", [{"name": "main", "image": "example.com/echoer", "args": ["echo from-args"]}],
             restartPolicy="Never")
    make_pod(kube, "command-only", [{"name": "main", "image": "example.com/echoer", "command": ["echo", "cmd"]}],
             restartPolicy="Never")
    make_pod(kube, "expand", [{"name": "main", "image": "busybox", "env": env, "command": ["sh", "-c"],
                               "args": ["echo \"$(GREETING)\" '$$(KEPT)' '$(MISSING)'; pwd"]}],
             restartPolicy="Never")
    for name in ("defaults", "args-only", "command-only", "expand"):
        await wait_phase(kube, name, "Succeeded")
    assert read_log(kube, "defaults") == "default-cmd\n"
    assert read_log(kube, "args-only") == "from-args\n"
    assert read_log(kube, "command-only") == "cmd\n"
    greeting, cwd = read_log(kube, "expand").splitlines()
    assert greeting == "hello $(KEPT) $(MISSING)"
    if kube.lk.network.isolated:
        assert cwd == "/"
    else:
        assert cwd == str(kube.lk.state_dir / "pods" / f"default_expand_{get_pod(kube, 'expand')['metadata']['uid'][:8]}"
                          / "rootfs")


@pytest.mark.asyncio
async def test_environment_from_downward_api_secrets_and_configmaps(any_kube):
    kube = any_kube
    kube.store.create(res(kube.lk, "secrets"), {"metadata": {"name": "creds"},
                      "data": {"token": base64.b64encode(b"s3cret").decode()}}, "default")
    kube.store.create(res(kube.lk, "configmaps"), {"metadata": {"name": "settings"},
                      "data": {"mode": "fast", "level": "3"}}, "default")
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "ABSENT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "x", "optional": True}}},
        {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "SERVICE_URL", "value": "http://0.0.0.0:8888/user/$(POD_NAME)/"},
        {"name": "NOTEBOOK_DIR", "value": "/home/jovyan/work"},
    ]
    code = "import json, os, sys; print(json.dumps({'env': dict(os.environ), 'argv': sys.argv[1:], 'cwd': os.getcwd()}))"
    pod = {"metadata": {"name": "env", "labels": {"app": "demo"},
                        "annotations": {"localkube.crater.io/devices": '{"nvidia.com/gpu": ["1", "3"]}'}},
           "spec": {"nodeName": kube.node, "restartPolicy": "Never", "containers": [{
        "name": "main", "image": "quay.io/jupyter/base-notebook:latest", "env": env,
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        "command": ["python", "-c", code], "args": ["--ip=0.0.0.0", "--dir=/home/jovyan/work"],
        "workingDir": "/home/jovyan/work", "resources": {"limits": {"memory": "256Mi"}},
    }]}}
    kube.store.create(res(kube.lk, "pods"), pod, "default")
    pod = await wait_phase(kube, "env", "Succeeded")
    out = json.loads(read_log(kube, "env"))
    ip = pod["status"]["podIP"]
    rootfs = log_path(kube.lk, pod, "main").parents[2] / "rootfs"
    e = out["env"]
    isolated = kube.lk.network.isolated
    assert ipaddress.ip_address(ip) in kube.lk.network.pod_cidr
    assert (e["POD_NAME"], e["POD_NS"], e["APP"], e["POD_IP"], e["NODE"]) == ("env", "default", "demo", ip, kube.node)
    assert (e["TOKEN"], e["MODE"], e["CFG_mode"], e["CFG_level"], e["MEM"]) == ("s3cret", "fast", "fast", "3", "256")
    assert "ABSENT" not in e
    assert e["NVIDIA_VISIBLE_DEVICES"] == "1,3"
    if isolated:  # paths and addresses are real: nothing is rewritten
        assert e["SERVICE_URL"] == "http://0.0.0.0:8888/user/env/"
        assert e["HOME"] == "/home/jovyan" and e["HOSTNAME"] == "env"
        assert e["NOTEBOOK_DIR"] == "/home/jovyan/work" == out["cwd"]
        assert out["argv"] == ["--ip=0.0.0.0", "--dir=/home/jovyan/work"]
        assert e["JUPYTER_CONFIG_PATH"] == "/etc/jupyter"
    else:
        assert e["SERVICE_URL"] == f"http://{ip}:8888/user/env/"
        assert e["HOME"] == f"{rootfs}/home/jovyan" and e["HOSTNAME"] == "env"
        assert e["NOTEBOOK_DIR"] == f"{rootfs}/home/jovyan/work" == out["cwd"]
        assert out["argv"] == [f"--ip={ip}", f"--dir={rootfs}/home/jovyan/work"]
    assert e["PATH"].split(":")[0] == os.path.dirname(os.sys.executable)


@pytest.mark.asyncio
async def test_missing_secret_is_a_config_error_until_it_exists(kube):
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}]
    make_pod(kube, "waits", [sh("main", "echo $TOKEN", env=env)], restartPolicy="Never")
    await wait_for(lambda: get_pod(kube, "waits")["status"].get("containerStatuses", [{}])[0]
                   .get("state", {}).get("waiting", {}).get("reason") == "CreateContainerConfigError")
    assert ("Failed", "Warning", 'Error: secret "later" not found') in pod_events(kube, "waits")
    kube.store.create(res(kube.lk, "secrets"), {"metadata": {"name": "later"},
                      "data": {"token": base64.b64encode(b"now").decode()}}, "default")
    await wait_phase(kube, "waits", "Succeeded")
    assert read_log(kube, "waits") == "now\n"


@pytest.mark.asyncio
async def test_pvc_data_outlives_pods_and_a_missing_claim_blocks_the_mount(kube):
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "shared"}}]
    mounts = [{"name": "data", "mountPath": "/data"}]
    make_pod(kube, "writer", [sh("main", "echo written-by-writer > /data/note", volumeMounts=mounts)],
             volumes=volumes, restartPolicy="Never")
    await wait_for(lambda: ("FailedMount", "Warning",
                            'MountVolume.SetUp failed for volume "data" : persistentvolumeclaim "shared" not found')
                   in pod_events(kube, "writer"))
    pod = get_pod(kube, "writer")
    assert pod["status"]["phase"] == "Pending"
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating"

    kube.store.create(res(kube.lk, "persistentvolumeclaims"), {"metadata": {"name": "shared"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}, "default")
    await wait_phase(kube, "writer", "Succeeded")
    kube.store.delete(res(kube.lk, "pods"), "default", "writer")
    make_pod(kube, "reader", [sh("main", "cat /data/note", volumeMounts=mounts)], volumes=volumes,
             restartPolicy="Never")
    await wait_phase(kube, "reader", "Succeeded")
    assert read_log(kube, "reader") == "written-by-writer\n"
    assert (kube.lk.state_dir / "volumes" / "default" / "shared" / "note").read_text() == "written-by-writer\n"


@pytest.mark.asyncio
async def test_configmap_volume_files(kube):
    kube.store.create(res(kube.lk, "configmaps"), {"metadata": {"name": "conf"},
                      "data": {"app.ini": "[app]\nx=1\n", "other": "o"}}, "default")
    volumes = [{"name": "conf", "configMap": {"name": "conf", "items": [{"key": "app.ini", "path": "etc/app.ini"}]}},
               {"name": "all", "configMap": {"name": "conf", "defaultMode": 0o600}}]
    mounts = [{"name": "conf", "mountPath": "/config"}, {"name": "all", "mountPath": "/all"}]
    make_pod(kube, "cm", [sh("main", "cat /config/etc/app.ini; ls /all; stat -c %a /all/other; ls /config",
                             volumeMounts=mounts)], volumes=volumes, restartPolicy="Never")
    await wait_phase(kube, "cm", "Succeeded")
    assert read_log(kube, "cm") == "[app]\nx=1\napp.ini\nother\n600\netc\n"


@pytest.mark.asyncio
async def test_restart_policy_never_reports_exit_codes(kube):
    make_pod(kube, "ok", [sh("main", "exit 0")], restartPolicy="Never")
    make_pod(kube, "bad", [sh("main", "exit 3")], restartPolicy="Never")
    make_pod(kube, "missing", [{"name": "main", "image": "busybox", "command": ["no-such-program"]}],
             restartPolicy="Never")
    ok = await wait_phase(kube, "ok", "Succeeded")
    bad = await wait_phase(kube, "bad", "Failed")
    missing = await wait_phase(kube, "missing", "Failed")
    term = ok["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (0, "Completed")
    assert term["containerID"].startswith("containerd://") and len(term["containerID"]) == 13 + 64
    term = bad["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (3, "Error")
    term = missing["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (128, "StartError")
    failed = [m for r, t, m in pod_events(kube, "missing") if r == "Failed" and t == "Warning"]
    assert failed and 'exec: "no-such-program": executable file not found in $PATH' in failed[0]
    ready = {c["type"]: c for c in bad["status"]["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "PodCompleted")
    reasons = [r for r, _, _ in pod_events(kube, "ok")]
    assert sorted(reasons) == ["Created", "Pulled", "Started"]
    # What kubernetes_asyncio (and so KubeSpawner) must be able to read.
    async with ApiClient() as api:
        parsed = api._ApiClient__deserialize(bad, "V1Pod")
    assert parsed.status.container_statuses[0].state.terminated.exit_code == 3


@pytest.mark.asyncio
async def test_init_containers_run_first_and_in_order(kube):
    volumes = [{"name": "scratch", "emptyDir": {}}]
    mounts = [{"name": "scratch", "mountPath": "/scratch"}]
    make_pod(kube, "inits", [sh("main", "cat /scratch/order", volumeMounts=mounts)], volumes=volumes,
             initContainers=[sh("first", "echo first >> /scratch/order", volumeMounts=mounts),
                             sh("second", "echo second >> /scratch/order", volumeMounts=mounts)],
             restartPolicy="Never")
    pod = await wait_phase(kube, "inits", "Succeeded")
    assert read_log(kube, "inits") == "first\nsecond\n"
    assert [s["state"]["terminated"]["reason"] for s in pod["status"]["initContainerStatuses"]] == ["Completed"] * 2


@pytest.mark.asyncio
async def test_on_failure_restarts_with_back_off_and_keeps_the_previous_log(kube):
    volumes = [{"name": "scratch", "emptyDir": {}}]
    mounts = [{"name": "scratch", "mountPath": "/scratch"}]
    script = "if [ -f /scratch/once ]; then echo second; exit 0; fi; touch /scratch/once; echo first; exit 1"
    make_pod(kube, "flaky", [sh("main", script, volumeMounts=mounts)], volumes=volumes, restartPolicy="OnFailure")
    make_pod(kube, "crashing", [sh("main", "echo crash; exit 2")], restartPolicy="OnFailure")

    pod = await wait_phase(kube, "flaky", "Succeeded")
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert read_log(kube, "flaky") == "second\n"
    assert read_log(kube, "flaky", previous=True) == "first\n"

    def backing_off():
        s = get_pod(kube, "crashing")["status"]["containerStatuses"][0]
        return s["restartCount"] >= 2 and s["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff" and s

    status = await wait_for(backing_off)
    uid = get_pod(kube, "crashing")["metadata"]["uid"]
    assert status["state"]["waiting"]["message"].startswith("back-off ")
    assert status["state"]["waiting"]["message"].endswith(
        f" restarting failed container=main pod=crashing_default({uid})")
    assert status["lastState"]["terminated"]["exitCode"] == 2
    assert get_pod(kube, "crashing")["status"]["phase"] == "Running"
    assert ("BackOff", "Warning", f"Back-off restarting failed container main in pod crashing_default({uid})") \
        in pod_events(kube, "crashing")


OUT_MOUNT = [{"name": "out", "mountPath": "/out"}]


def out_volume(kube):
    """A hostPath volume the test reads (a pod's other writes stay in its own view)."""
    path = kube.lk.state_dir.parent / "out"
    return [{"name": "out", "hostPath": {"path": str(path), "type": "DirectoryOrCreate"}}]


async def _running_with_pid(kube, name, pidfile):
    await wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
    pod = await wait_phase(kube, name, "Running")
    assert all(c["type"] != "Ready" or c["status"] == "True" for c in pod["status"]["conditions"])
    return int(pidfile.read_text().split()[0])


@pytest.mark.asyncio
async def test_graceful_delete_sends_sigterm_then_sigkill_after_the_grace_period(kube):
    kube.store.create(res(kube.lk, "persistentvolumeclaims"), {"metadata": {"name": "out"}, "spec": {}}, "default")
    volumes = [{"name": "out", "persistentVolumeClaim": {"claimName": "out"}}]
    out = kube.lk.state_dir / "volumes" / "default" / "out"
    polite = "trap 'echo got-term > /out/term; exit 0' TERM; echo $$$$ > /out/polite; while true; do sleep 0.05; done"
    stubborn = "trap '' TERM; echo $$$$ > /out/stubborn; while true; do sleep 0.05; done"
    mounts = [{"name": "out", "mountPath": "/out"}]
    make_pod(kube, "polite", [sh("main", polite, volumeMounts=mounts)], volumes=volumes)
    make_pod(kube, "stubborn", [sh("main", stubborn, volumeMounts=mounts)], volumes=volumes)
    polite_pid = await _running_with_pid(kube, "polite", out / "polite")
    stubborn_pid = await _running_with_pid(kube, "stubborn", out / "stubborn")

    began = time.monotonic()
    kube.store.delete(res(kube.lk, "pods"), "default", "polite", grace=30)
    kube.store.delete(res(kube.lk, "pods"), "default", "stubborn", grace=1)
    assert get_pod(kube, "polite")["metadata"]["deletionTimestamp"]
    await wait_for(lambda: get_pod(kube, "polite") is None, timeout=5)
    assert (out / "term").read_text() == "got-term\n"
    assert time.monotonic() - began < 5
    await wait_for(lambda: get_pod(kube, "stubborn") is None, timeout=5)
    assert time.monotonic() - began >= 0.9
    assert not alive(polite_pid) and not alive(stubborn_pid)
    assert ("Killing", "Normal", "Stopping container main") in pod_events(kube, "stubborn")


@pytest.mark.asyncio
async def test_grace_zero_kills_at_once_and_frees_the_address(kube):
    pidfile = kube.lk.state_dir.parent / "out" / "pid"
    make_pod(kube, "doomed", [sh("main", "trap '' TERM; echo $$$$ > /out/pid; while true; do sleep 0.05; done",
                                 volumeMounts=OUT_MOUNT)], volumes=out_volume(kube))
    pid = await _running_with_pid(kube, "doomed", pidfile)
    ip = get_pod(kube, "doomed")["status"]["podIP"]
    kube.store.delete(res(kube.lk, "pods"), "default", "doomed", grace=0)
    assert get_pod(kube, "doomed") is None
    await wait_for(lambda: not alive(pid), timeout=3)
    await wait_for(lambda: not kube.kubelet.net.holds(ip), timeout=3)


@pytest.mark.asyncio
async def test_stop_leaves_no_process_behind(kube):
    pidfile = kube.lk.state_dir.parent / "out" / "pids"
    # A child in the group, and one that left the group with setsid: both must go.
    script = "sleep 300 & echo $! >> /out/pids; setsid sleep 301 & echo $! >> /out/pids; echo $$$$ >> /out/pids; wait"
    make_pod(kube, "tree", [sh("main", script, volumeMounts=OUT_MOUNT)], volumes=out_volume(kube))
    await wait_for(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 3)
    pids = [int(p) for p in pidfile.read_text().split()]
    assert all(alive(p) for p in pids)
    began = time.monotonic()
    await kube.kubelet.stop()
    assert time.monotonic() - began < 5
    await wait_for(lambda: not any(alive(p) for p in pids), timeout=2)


@pytest.mark.asyncio
async def test_jupyter_server_runs_as_root_on_the_pod_address(any_kube):
    kube = any_kube
    make_pod(kube, "jupyter", [{
        "name": "notebook", "image": "quay.io/jupyterhub/k8s-singleuser-sample:4.0.0",
        "command": ["jupyter", "server", "--ServerApp.token=x", "--ip=0.0.0.0", "--port=8888"],
    }], restartPolicy="OnFailure")
    pod = await wait_phase(kube, "jupyter", "Running")
    url = f"http://{pod['status']['podIP']}:8888/api/status?token=x"
    client = AsyncHTTPClient()

    async def answers():
        try:
            return (await client.fetch(url, request_timeout=2)).code == 200
        except (HTTPClientError, OSError):
            return False

    await wait_for(answers, timeout=60, interval=0.2, message=f"{url} answering")
    assert get_pod(kube, "jupyter")["status"]["containerStatuses"][0]["restartCount"] == 0
    assert "Running as root" not in read_log(kube, "jupyter", "notebook")


def test_log_path_is_per_container_with_a_previous_instance(tmp_path):
    lk = SimpleNamespace(state_dir=tmp_path)
    pod = {"metadata": {"namespace": "ns", "name": "p", "uid": "0123456789abcdef"}}
    assert log_path(lk, pod, "c") == tmp_path / "pods" / "ns_p_01234567" / "logs" / "c" / "current.log"
    assert log_path(lk, pod, "c", previous=True).name == "previous.log"



@pytest.mark.asyncio
async def test_a_ray_image_sees_its_assigned_gpus_as_cuda_visible_devices(kube):
    """No GPU here: the rayproject/ray entry hands the device plugin's ids on as CUDA_VISIBLE_DEVICES
    (what Ray reads for its GPU ids); a pod's own CUDA_VISIBLE_DEVICES wins; a pod without devices
    gets neither variable."""
    code = ["python", "-c", "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES'), "
            "os.environ.get('NVIDIA_VISIBLE_DEVICES'))"]
    for name, devices, env in (("gpu", ["1", "3"], []), ("own", ["2"], [{"name": "CUDA_VISIBLE_DEVICES", "value": "7"}]),
                               ("cpu", None, [])):
        annotations = {"localkube.crater.io/devices": json.dumps({"nvidia.com/gpu": devices})} if devices else {}
        kube.store.create(res(kube.lk, "pods"), {
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"nodeName": kube.node, "restartPolicy": "Never", "containers": [
                {"name": "main", "image": "rayproject/ray:2.60.0-py311-gpu", "command": code, "env": env}]}},
            "default")
    for name in ("gpu", "own", "cpu"):
        await wait_phase(kube, name, "Succeeded")
    assert read_log(kube, "gpu") == "1,3 1,3\n"
    assert read_log(kube, "own") == "7 2\n"
    assert read_log(kube, "cpu") == "None None\n"


@pytest.mark.asyncio
async def test_readiness_probes_hold_ready_until_the_server_answers(any_kube):
    """httpGet and tcpSocket readiness probes: Running but not Ready until the port answers (the
    server starts 1.5 s late); a container without a probe is ready while it runs."""
    kube = any_kube
    serve = "import time, http.server as h; time.sleep(1.5); h.HTTPServer(('0.0.0.0', 8080), h.SimpleHTTPRequestHandler).serve_forever()"
    probe = {"periodSeconds": 1, "timeoutSeconds": 1}
    make_pod(kube, "web", [
        {"name": "http", "image": "python:3.11", "command": ["python", "-c", serve],
         "ports": [{"name": "web", "containerPort": 8080}],
         "readinessProbe": {"httpGet": {"path": "/", "port": "web"}, **probe}},
        {"name": "tcp", "image": "python:3.11", "command": ["sleep", "60"],
         "readinessProbe": {"tcpSocket": {"port": 8080}, **probe}},
        {"name": "plain", "image": "busybox", "command": ["sleep", "60"]},
    ])

    def ready(pod):
        return {c["type"]: c["status"] for c in pod["status"].get("conditions") or []}.get("Ready")

    running = await wait_phase(kube, "web", "Running")
    early = {c["name"]: c["ready"] for c in running["status"]["containerStatuses"]}
    assert ready(running) == "False" and early["http"] is False and early["tcp"] is False
    await wait_for(lambda: ready(get_pod(kube, "web")) == "True", timeout=10, message="Ready after the server starts")
    assert all(c["ready"] for c in get_pod(kube, "web")["status"]["containerStatuses"])


@pytest.mark.asyncio
async def test_a_subpath_is_made_when_missing_and_may_not_lead_out_of_its_volume(kube, tmp_path):
    kube.store.create(res(kube.lk, "persistentvolumeclaims"), {"metadata": {"name": "spaces"}, "spec": {
        "accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}}, "default")
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "spaces"}}]
    made = [{"name": "data", "mountPath": "/data", "subPath": "users/ada/new"}]
    make_pod(kube, "maker", [sh("main", "echo hi > /data/f", volumeMounts=made)], volumes=volumes,
             restartPolicy="Never")
    await wait_phase(kube, "maker", "Succeeded")
    claim = kube.lk.state_dir / "volumes" / "default" / "spaces"
    assert (claim / "users" / "ada" / "new" / "f").read_text() == "hi\n"

    outside = tmp_path / "host-secrets"
    outside.mkdir()
    (claim / "users" / "ada" / "escape").symlink_to(outside)
    for name, sub in (("through-link", "users/ada/escape"), ("dot-dot", "users/../../x")):
        mounts = [{"name": "data", "mountPath": "/data", "subPath": sub}]
        make_pod(kube, name, [sh("main", "true", volumeMounts=mounts)], volumes=volumes,
                 restartPolicy="Never")
        await wait_for(lambda name=name, sub=sub: ("FailedMount", "Warning", (
            f'failed to prepare subPath for volumeMount "data": subpath "{sub}" is not within the volume'))
            in pod_events(kube, name))
        assert get_pod(kube, name)["status"]["phase"] == "Pending"
    assert not (tmp_path / "x").exists()
