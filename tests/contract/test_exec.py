"""``kubectl exec``/``port-forward`` (kubectl 1.37, websockets) and kubernetes_asyncio's
``WsApiClient`` against localkube's ``pods/exec`` and ``pods/portforward``."""

import asyncio
import fcntl
import json
import os
import pty
import re
import socket
import struct
import termios
import urllib.request

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.stream import WsApiClient

from crater_hub.localkube import spdy
from crater_hub.localkube.execute import read_fd
from crater_hub.localkube.portforward import SPDY_PROTOCOL as PORT_FORWARD_SPDY
from tests.helpers import wait_for

from .conftest import kubectl_binary

POD = "web"
# A small web server in the pod: its page names the pod it runs in.
WEB = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD},
    "spec": {"restartPolicy": "Never", "containers": [{
        "name": "main", "image": "python:3.12", "workingDir": "/srv",
        "env": [{"name": "GREETING", "value": "hello from the pod spec"}],
        "command": ["sh", "-c", "echo hello-from-$HOSTNAME > index.html && "
                                "exec python3 -u -m http.server 8000 --bind 0.0.0.0"],
    }]},
}


@pytest.fixture
async def web(kube):
    """The web pod, running and answering on port 8000 inside the pod."""
    await kube.core.create_namespaced_pod("default", WEB)

    async def serving():
        pod = await kube.core.read_namespaced_pod(POD, "default")
        if pod.status.phase != "Running":
            return False
        log = await kube.core.read_namespaced_pod_log(POD, "default")
        return "Serving HTTP" in log

    await wait_for(serving, timeout=30, message="the web pod serving")
    return POD


@pytest.fixture
def run_kubectl(kube):
    """kubectl's (exit code, stdout, stderr)."""

    async def run(*args, stdin=None):
        proc = await asyncio.create_subprocess_exec(
            kubectl_binary(), "--kubeconfig", str(kube.kubeconfig), *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 60)
        return proc.returncode, out.decode(), err.decode()

    return run


@pytest.fixture
async def ws_core(kube):
    """CoreV1Api on kubernetes_asyncio's websocket client."""
    api = WsApiClient(configuration=kube.api.configuration)
    yield client.CoreV1Api(api)
    await api.close()


# -- kubectl exec ------------------------------------------------------------------------------


async def test_exec_prints_output_in_the_containers_environment(web, run_kubectl):
    code, out, err = await run_kubectl("exec", web, "--", "sh", "-c", 'echo "$GREETING"; echo to-stderr >&2')
    assert code == 0, err
    assert out == "hello from the pod spec\n"
    assert err == "to-stderr\n"


async def test_exec_exit_code_becomes_kubectls(web, run_kubectl):
    code, out, err = await run_kubectl("exec", web, "--", "sh", "-c", "echo before; exit 3")
    assert code == 3
    assert out == "before\n"
    assert "command terminated with exit code 3" in err


async def test_exec_hostname_is_the_pod_name(web, run_kubectl):
    """Needs the pod's own UTS namespace (isolated mode): loopback mode prints the machine's name."""
    code, out, err = await run_kubectl("exec", web, "--", "hostname")
    assert code == 0, err
    assert out == f"{web}\n"


async def test_exec_stdin_reaches_the_command(web, run_kubectl):
    text = "first line\nsecond line\n" + "x" * 100_000 + "\n"
    code, out, err = await run_kubectl("exec", "-i", web, "--", "cat", stdin=text)
    assert code == 0, err
    assert out == text


async def test_exec_with_a_terminal(web, kube):
    """``kubectl exec -it``: the command gets a terminal of kubectl's window size; typed input
    reaches it through kubectl's raw terminal."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    script = "echo ready; read answer; echo got=$answer; stty size; test -t 0 && echo on-a-terminal"
    proc = await asyncio.create_subprocess_exec(
        kubectl_binary(), "--kubeconfig", str(kube.kubeconfig), "exec", "-it", web, "--", "sh", "-c", script,
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    os.set_blocking(master, False)
    seen = b""

    async def read_until(pattern):
        nonlocal seen
        while not re.search(pattern, seen):
            chunk = await read_fd(master)
            assert chunk, f"the terminal closed before {pattern!r} appeared: {seen!r}"
            seen += chunk

    try:
        await asyncio.wait_for(read_until(rb"ready"), 30)
        os.write(master, b"yes\r")
        await asyncio.wait_for(read_until(rb"on-a-terminal"), 30)
        assert await asyncio.wait_for(proc.wait(), 30) == 0, seen
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)
    text = seen.decode(errors="replace")
    assert "got=yes" in text and "33 101" in text, text


async def test_exec_errors_read_as_kubectl_users_know_them(web, run_kubectl, kube):
    code, _, err = await run_kubectl("exec", "nosuchpod", "--", "true")
    assert code == 1 and 'pods "nosuchpod" not found' in err
    code, _, err = await run_kubectl("exec", web, "-c", "nosuch", "--", "true")
    assert code == 1 and "container nosuch is not valid for pod web" in err, err
    code, _, err = await run_kubectl("exec", web, "--", "no-such-program")
    assert code == 1 and 'exec: "no-such-program": executable file not found in $PATH' in err, err


async def test_what_an_exec_starts_ends_with_the_pod(web, run_kubectl, kube):
    code, out, err = await run_kubectl("exec", web, "--", "sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!")
    assert code == 0, err
    pid = int(out)
    os.kill(pid, 0)  # running, left behind by the exec that started it
    await kube.core.delete_namespaced_pod(web, "default", grace_period_seconds=1)

    def gone():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    await wait_for(gone, timeout=20, message=f"process {pid} of the deleted pod gone")


# -- kubernetes_asyncio WsApiClient ----------------------------------------------------------


async def test_ws_api_client_exec_returns_the_output(web, ws_core):
    out = await ws_core.connect_get_namespaced_pod_exec(
        web, "default", command=["sh", "-c", 'echo "$GREETING"'], stderr=True, stdin=False, stdout=True, tty=False)
    assert out == "hello from the pod spec\n"


async def test_ws_api_client_exec_channels_and_exit_code(web, ws_core):
    ws = await ws_core.connect_get_namespaced_pod_exec(
        web, "default", command=["sh", "-c", "read line; echo out=$line; echo err >&2; exit 5"],
        stderr=True, stdin=True, stdout=True, tty=False, _preload_content=False)
    channels = {}
    async with ws as conn:
        await conn.send_bytes(b"\x00typed\n")
        async for msg in conn:
            channels.setdefault(msg.data[0], b"")
            channels[msg.data[0]] += msg.data[1:]
    assert channels[1] == b"out=typed\n" and channels[2] == b"err\n"
    status = json.loads(channels[3])
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert WsApiClient.parse_error_data(channels[3]) == 5


async def test_ws_api_client_exec_terminal_resize(web, ws_core):
    """A resize message sets the terminal's size before the command reads it."""
    ws = await ws_core.connect_get_namespaced_pod_exec(
        web, "default", command=["sh", "-c", "read go; stty size"],
        stderr=False, stdin=True, stdout=True, tty=True, _preload_content=False)
    out = b""
    async with ws as conn:
        await conn.send_bytes(b"\x04" + json.dumps({"Width": 120, "Height": 40}).encode())
        await conn.send_bytes(b"\x00go\n")
        async for msg in conn:
            if msg.data[0] == 1:
                out += msg.data[1:]
    assert b"40 120" in out, out


async def test_exec_refusals_are_http_statuses(web, ws_core):
    """What goes wrong before the websocket opens is an HTTP answer (aiohttp raises it)."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await ws_core.connect_get_namespaced_pod_exec("nosuchpod", "default", command=["true"])
    assert info.value.status == 404
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await ws_core.connect_get_namespaced_pod_exec(web, "default", command=["true"], stdout="maybe")
    assert info.value.status == 400


# -- port-forward ------------------------------------------------------------------------------


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


async def test_kubectl_port_forward_serves_the_pods_port(web, kube):
    local = _free_port()
    proc = await asyncio.create_subprocess_exec(
        kubectl_binary(), "--kubeconfig", str(kube.kubeconfig), "port-forward", f"pod/{web}", f"{local}:8000",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async def answers():
            try:
                return await asyncio.to_thread(_get, f"http://127.0.0.1:{local}/")
            except OSError:
                return None

        page = await wait_for(answers, timeout=30, interval=0.2, message="the forwarded port answering")
        assert page == f"hello-from-{web}\n"
        # every new connection is a new pair of streams on the same tunnel
        pages = await asyncio.gather(*(asyncio.to_thread(_get, f"http://127.0.0.1:{local}/") for _ in range(5)))
        assert pages == [page] * 5
        assert proc.returncode is None
    finally:
        proc.terminate()
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert f"Forwarding from 127.0.0.1:{local} -> 8000" in out.decode(), (out, err)


async def test_kubectl_port_forward_to_a_closed_port_reports_the_error(web, kube):
    local = _free_port()
    proc = await asyncio.create_subprocess_exec(
        kubectl_binary(), "--kubeconfig", str(kube.kubeconfig), "port-forward", f"pod/{web}", f"{local}:9",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        def connected():
            try:
                socket.create_connection(("127.0.0.1", local), timeout=5).close()
                return True
            except OSError:  # kubectl not listening yet
                return False

        await wait_for(connected, timeout=30, interval=0.2, message="kubectl listening")
        _, err = await asyncio.wait_for(proc.communicate(), 30)  # an error on a stream ends kubectl
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    err = err.decode()
    assert proc.returncode == 1 and "lost connection to pod" in err, err
    assert "error forwarding port 9" in err and "connection refused" in err, err


async def test_ws_api_client_port_forward(web, ws_core):
    """The channel protocol as the Python clients speak it: data channel 0, error channel 1, each
    opened by the server with the port as two little-endian bytes."""
    ws = await ws_core.connect_get_namespaced_pod_portforward(web, "default", ports="8000", _preload_content=False)
    frames = []
    async with ws as conn:
        first = [(await conn.receive_bytes()) for _ in range(2)]
        await conn.send_bytes(b"\x00GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
        async for msg in conn:
            frames.append(msg.data)
    assert first == [b"\x00" + struct.pack("<H", 8000), b"\x01" + struct.pack("<H", 8000)]
    body = b"".join(f[1:] for f in frames if f[0] == 0)
    assert body.startswith(b"HTTP/1.0 200") and body.endswith(f"hello-from-{web}\n".encode())
    assert not [f for f in frames if f[0] == 1]


async def test_spdy_port_forward_frames_cut_anywhere(web, kube):
    """The tunnel is a byte stream: SPDY frames cut at every byte still make one request; a PING is
    answered; streams without a requestID (older clients) pair by stream id."""
    url = f"{kube.lk.url.replace('http', 'ws')}/api/v1/namespaces/default/pods/{web}/portforward"
    writer, reader = spdy.FrameWriter(), spdy.FrameReader()
    stream = (writer.syn_stream(1, {"streamtype": "error", "port": "8000"})
              + writer.syn_stream(3, {"streamtype": "data", "port": "8000"})
              + writer.ping(7) + writer.data(3, b"GET / HTTP/1.0\r\n\r\n"))
    frames = []
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(url, protocols=[PORT_FORWARD_SPDY]) as ws:
        assert ws.protocol == PORT_FORWARD_SPDY
        for i in range(len(stream)):
            await ws.send_bytes(stream[i:i + 1])

        async def error_stream_ended():
            frames.extend(reader.feed(await ws.receive_bytes()))
            return any(f.kind is None and f.stream_id == 1 and f.fin for f in frames)

        await wait_for(error_stream_ended, timeout=20, interval=0, message="the error stream's end")
    assert [f.stream_id for f in frames if f.kind == spdy.SYN_REPLY] == [1, 3]
    assert [f.value for f in frames if f.kind == spdy.PING] == [7]
    data = b"".join(f.data for f in frames if f.kind is None and f.stream_id == 3)
    assert data.startswith(b"HTTP/1.0 200") and data.endswith(f"hello-from-{web}\n".encode())
    assert [f.fin for f in frames if f.kind is None and f.stream_id == 3][-1]
    assert b"".join(f.data for f in frames if f.kind is None and f.stream_id == 1) == b""


# -- discovery ---------------------------------------------------------------------------------


async def test_discovery_lists_exec_and_portforward(kube):
    resources = {r.name: r for r in (await kube.core.get_api_resources()).resources}
    assert resources["pods/exec"].kind == "PodExecOptions"
    assert resources["pods/portforward"].kind == "PodPortForwardOptions"
    assert sorted(resources["pods/exec"].verbs) == ["create", "get"]
