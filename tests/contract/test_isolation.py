"""Pods isolated like real pods (as root): their own network, hostname and filesystem view.

Every pod here is a Python program (the ``python`` image runs the host's Python) talking to the
test through its log or over HTTP at its pod IP, as a user would see it.
"""

import asyncio
import json
import os
import socket
import textwrap
import uuid

import pytest
from kubernetes_asyncio.client.exceptions import ApiException
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from tests.helpers import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="isolated pods need root (namespaces, a bridge)")

# Answers every GET with {"hostname", "resolved"} and binds both the wildcard and 127.0.0.1.
SERVER = textwrap.dedent("""
    import http.server, json, socket, threading
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            name = socket.gethostname()
            body = json.dumps({"hostname": name, "resolved": socket.gethostbyname(name)}).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)
    local = http.server.HTTPServer(("127.0.0.1", 8001), Handler)
    threading.Thread(target=local.serve_forever, daemon=True).start()
    http.server.HTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
""")


def python_pod(name, code, volumes=(), mounts=(), restart="Never"):
    container = {"name": "main", "image": "python:3.11", "command": ["python3", "-c", code],
                 "volumeMounts": list(mounts)}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": restart, "containers": [container], "volumes": list(volumes)}}


async def running(kube, name):
    pod = await kube.core.read_namespaced_pod(name, "default")
    return pod if pod.status.phase == "Running" else None


async def finished_log(kube, name, timeout=30):
    async def done():
        pod = await kube.core.read_namespaced_pod(name, "default")
        return pod.status.phase in ("Succeeded", "Failed")

    await wait_for(done, timeout=timeout, message=f"pod {name} finished")
    return await kube.core.read_namespaced_pod_log(name, "default")


def result(log):
    """The JSON a pod printed after "result " (a bare JSON log reads back as a Python repr in
    kubernetes_asyncio, which decodes it)."""
    return json.loads(log.split("result ", 1)[1])


async def get_json(url):
    try:
        return json.loads((await AsyncHTTPClient().fetch(url, request_timeout=2)).body)
    except (HTTPClientError, OSError):
        return None


async def test_two_pods_bind_the_same_port_and_answer_with_their_own_name(kube):
    assert kube.lk.network.isolated
    for name in ("left", "right"):
        await kube.core.create_namespaced_pod("default", python_pod(name, SERVER, restart="Always"))
    answers = {}
    for name in ("left", "right"):
        pod = await wait_for(lambda n=name: running(kube, n), timeout=30, message=f"{name} running")
        ip = pod.status.pod_ip
        answer = await wait_for(lambda ip=ip: get_json(f"http://{ip}:8000/"), timeout=30,
                                message=f"{name} answering at {ip}:8000")
        answers[name] = (ip, answer)
    (left_ip, left), (right_ip, right) = answers["left"], answers["right"]
    assert left_ip != right_ip
    assert left == {"hostname": "left", "resolved": left_ip}
    assert right == {"hostname": "right", "resolved": right_ip}
    # What a pod binds on 127.0.0.1 stays inside it.
    with pytest.raises((HTTPClientError, OSError)):
        await AsyncHTTPClient().fetch(f"http://{left_ip}:8001/", request_timeout=2)

    # Pods reach each other, and localkube's API through the gateway (KUBERNETES_SERVICE_HOST).
    probe = textwrap.dedent(f"""
        import json, os, urllib.request
        def get(url):
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        api = f"http://{{os.environ['KUBERNETES_SERVICE_HOST']}}:{{os.environ['KUBERNETES_SERVICE_PORT']}}"
        print("result", json.dumps({{"left": get("http://{left_ip}:8000/")["hostname"],
                          "right": get("http://{right_ip}:8000/")["hostname"],
                          "api": get(api + "/version")["major"],
                          "resolv": open("/etc/resolv.conf").read()}}))
    """)
    await kube.core.create_namespaced_pod("default", python_pod("probe", probe))
    out = result(await finished_log(kube, "probe"))
    gateway = kube.lk.network.gateway_ip
    assert (out["left"], out["right"], out["api"]) == ("left", "right", "1")
    assert f"nameserver {gateway}" in out["resolv"]
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in out["resolv"]


async def test_enter_and_open_connection_reach_inside_the_pod(kube):
    """The kubelet's contract for pods/exec and port-forward: a process in the container's
    namespaces with its env and cwd; a connection to a port bound on the pod's 127.0.0.1."""
    pod = python_pod("inside", SERVER, restart="Always")
    pod["spec"]["containers"][0].update(workingDir="/srv", env=[{"name": "GREETING", "value": "hi"}])
    await kube.core.create_namespaced_pod("default", pod)
    await wait_for(lambda: running(kube, "inside"), timeout=30, message="inside running")
    kubelet = next(c for c in kube.lk.controllers if hasattr(c, "enter"))
    env, cwd, preexec = kubelet.enter("default", "inside", "main")
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", 'echo "$(hostname) $(pwd) $GREETING"; cat /etc/hostname', env=env, cwd=None,
        preexec_fn=preexec, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and out.decode().splitlines() == ["inside /srv hi", "inside"]
    assert cwd == "/srv"

    async def local_answer():
        try:
            reader, writer = await kubelet.open_connection("default", "inside", 8001)
        except OSError:
            return None
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        body = (await reader.read()).split(b"\r\n\r\n", 1)[1]
        writer.close()
        return json.loads(body)

    assert (await wait_for(local_answer, timeout=30, message="8001 inside"))["hostname"] == "inside"
    with pytest.raises(LookupError):
        kubelet.enter("default", "nobody", "main")


async def test_a_write_into_a_read_only_volume_fails_with_erofs(kube):
    await kube.core.create_namespaced_persistent_volume_claim("default", {
        "metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
                                               "resources": {"requests": {"storage": "1Gi"}}}})
    code = textwrap.dedent("""
        import errno
        for path in ("/rw/ok", "/ro/nope"):
            try:
                open(path, "w").write("x")
                print(path, "written")
            except OSError as e:
                print(path, errno.errorcode[e.errno])
    """)
    await kube.core.create_namespaced_config_map("default", {"metadata": {"name": "settings"},
                                                             "data": {"mode": "fast"}})
    code = code.replace('"/ro/nope")', '"/ro/nope", "/config/mode")')
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
               {"name": "config", "configMap": {"name": "settings"}}]
    mounts = [{"name": "data", "mountPath": "/rw"}, {"name": "data", "mountPath": "/ro", "readOnly": True},
              {"name": "config", "mountPath": "/config"}]  # configMaps are read-only without asking
    await kube.core.create_namespaced_pod("default", python_pod("writer", code, volumes, mounts))
    assert (await finished_log(kube, "writer")).splitlines() == [
        "/rw/ok written", "/ro/nope EROFS", "/config/mode EROFS"]


async def test_files_outside_volumes_stay_in_the_pod_and_the_state_dir_is_hidden(kube, tmp_path):
    secret = f"/var/tmp/pod-secret-{uuid.uuid4().hex}"
    state = str(kube.lk.state_dir.absolute())
    writer = textwrap.dedent(f"""
        import os, time
        open("{secret}", "w").write("mine")
        print("wrote", open("{secret}").read(), flush=True)
        time.sleep(3600)
    """)
    await kube.core.create_namespaced_pod("default", python_pod("keeper", writer, restart="Always"))
    await wait_for(lambda: _log_has(kube, "keeper", "wrote mine"), timeout=30, message="keeper wrote")
    assert not os.path.exists(secret)  # the host's view

    # Another pod sees neither that file nor localkube's state (other pods' volumes, logs, ...).
    looker = textwrap.dedent(f"""
        import json, os
        print("result", json.dumps({{"secret": os.path.exists("{secret}"), "state": os.listdir("{state}"),
                          "pods": os.path.exists("{state}/pods")}}))
    """)
    await kube.core.create_namespaced_pod("default", python_pod("looker", looker))
    out = result(await finished_log(kube, "looker"))
    assert out == {"secret": False, "state": [], "pods": False}
    assert os.listdir(kube.lk.state_dir / "pods")  # the host sees it


async def _log_has(kube, name, text):
    try:
        return text in await kube.core.read_namespaced_pod_log(name, "default")
    except ApiException:
        return False


async def test_a_host_network_pod_shares_the_nodes_network_and_name(kube):
    code = "import socket; print('result', socket.gethostname())"
    pod = python_pod("hostnet", code)
    pod["spec"]["hostNetwork"] = True
    await kube.core.create_namespaced_pod("default", pod)
    log = await finished_log(kube, "hostnet")
    status = (await kube.core.read_namespaced_pod("hostnet", "default")).status
    assert log.split("result ", 1)[1].strip() == socket.gethostname()
    assert status.pod_ip == status.host_ip == kube.lk.network.gateway_ip


async def test_hostname_and_subdomain_name_the_pod_in_its_hosts_file(kube):
    code = "import socket; print('result', socket.gethostname(), socket.gethostbyname(socket.getfqdn()))"
    pod = python_pod("named", code)
    pod["spec"].update(hostname="worker-0", subdomain="workers")
    await kube.core.create_namespaced_pod("default", pod)
    log = await finished_log(kube, "named")
    ip = (await kube.core.read_namespaced_pod("named", "default")).status.pod_ip
    assert log.split("result ", 1)[1].split() == ["worker-0", ip]


# Ways around the masks a root process has on a shared kernel: another process's root or
# environment through /proc (no PID namespace here), and undoing the mask itself.
ESCAPES = textwrap.dedent("""
    import errno, json, os, subprocess, sys, time
    state, localkube = sys.argv[1], sys.argv[2]
    def attempt(what):
        try:
            return what()
        except OSError as e:
            return errno.errorcode[e.errno]
    out = {
        "pid 1 root": attempt(lambda: os.listdir(f"/proc/1/root{state}")),
        "localkube root": attempt(lambda: os.listdir(f"/proc/{localkube}/root{state}")),
        "localkube environ": attempt(lambda: len(open(f"/proc/{localkube}/environ", "rb").read()) > 0),
        "umount": "skipped" if sys.argv[3:] else (
            subprocess.run(["umount", state], capture_output=True).returncode != 0 or "unmounted"),
        "state": os.listdir(state),
    }
    print("result", json.dumps(out), flush=True)
    time.sleep(3600)
""")


async def test_a_pod_cannot_reach_the_state_dir_through_proc_nor_unmount_its_mask(kube):
    state = str(kube.lk.state_dir.absolute())
    args = [state, str(os.getpid())]  # localkube runs in this process
    pod = python_pod("escaper", ESCAPES, restart="Always")
    pod["spec"]["containers"][0]["args"] = args
    privileged = python_pod("trusted", ESCAPES)
    privileged["spec"]["containers"][0].update(args=[*args, "no-umount"], securityContext={"privileged": True})
    for p in (pod, privileged):
        await kube.core.create_namespaced_pod("default", p)
    await wait_for(lambda: _log_has(kube, "escaper", "result"), timeout=30, message="escaper tried")
    out = result(await kube.core.read_namespaced_pod_log("escaper", "default"))
    assert os.listdir(f"/proc/{os.getpid()}/root{state}/pods")  # what the pod may not see
    assert out == {"pid 1 root": "EACCES", "localkube root": "EACCES", "localkube environ": "EACCES",
                   "umount": True, "state": []}
    # pods/exec enters with the same limits.
    kubelet = next(c for c in kube.lk.controllers if hasattr(c, "enter"))
    env, _, preexec = kubelet.enter("default", "escaper", "main")
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", f"cat /proc/{os.getpid()}/environ >/dev/null || echo refused; umount {state} || echo kept",
        env=env, preexec_fn=preexec, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert (await proc.communicate())[0].decode().split() == ["refused", "kept"]
    # A privileged container keeps every capability (the images issue commits pods with one).
    await wait_for(lambda: _log_has(kube, "trusted", "result"), timeout=30, message="trusted tried")
    trusted = result(await kube.core.read_namespaced_pod_log("trusted", "default"))
    assert trusted["localkube environ"] is True and trusted["localkube root"] != "EACCES"


async def test_a_working_directory_behind_a_host_symlink_is_made_in_the_pod_not_on_the_host(kube):
    name = f"lk-test-{uuid.uuid4().hex[:12]}"
    assert os.path.islink("/var/run") and os.path.realpath("/var/run") == "/run"  # as on Debian
    pod = python_pod("symlinked", "import os; print('result', os.getcwd())")
    pod["spec"]["containers"][0]["workingDir"] = f"/var/run/{name}"
    await kube.core.create_namespaced_pod("default", pod)
    log = await finished_log(kube, "symlinked")
    status = (await kube.core.read_namespaced_pod("symlinked", "default")).status
    assert status.phase == "Succeeded" and log.split("result ", 1)[1].strip() in (f"/run/{name}", f"/var/run/{name}")
    assert not os.path.exists(f"/run/{name}")
