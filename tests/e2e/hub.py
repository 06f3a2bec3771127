"""The real hub as a subprocess, and the HTTP calls tests make to it (REST, progress, the proxy).

Shared by the e2e fixtures and ``benchmarks/spawn_time.py``, so both measure the same platform:
``jupyterhub -f jupyterhub_config.py`` unmodified, pointed at a localkube through ``KUBECONFIG``
(the config's "cluster configured" path), on free ports, with an admin token for the REST API.
"""

import itertools
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from crater_hub.embedded import pod_reachable_ip

from ..helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "jupyterhub_config.py"
DEMO_CRATER = REPO / "crater_hub" / "localkube" / "demo-crater.yaml"
JUPYTERHUB = Path(sys.executable).with_name("jupyterhub")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_mentioning(text):
    """PIDs (other than ours) whose command line or environment contains ``text``."""
    needle = text.encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes()
            environ = Path(entry.path, "environ").read_bytes()
        except OSError:  # exited meanwhile, or not ours to read
            continue
        if needle in cmdline or needle in environ:
            found.append(int(entry.name))
    return found


class HubProcess:
    """``jupyterhub -f jupyterhub_config.py`` on free ports; ``restart()`` keeps its database.

    Servers outlive the hub (``cleanup_servers=False``) so a restart can be tested, and the hub
    polls servers every second so a dead one is noticed quickly. By default POST spawn returns
    at once (``slow_spawn_timeout=0``), as the browser's spawn page does, so the progress stream
    is followed from the start; ``slow_spawn_timeout=10`` is JupyterHub's own default, under
    which a spawn refused early comes back as the POST's answer.

    With ``kubeconfig=None`` it is the README's first command, ``./dev run``, with no cluster
    configured (no KUBECONFIG, a HOME without ``~/.kube``): the hub starts its embedded localkube.
    """

    def __init__(self, state_dir, kubeconfig, slow_spawn_timeout=0, extra_args=(), env=None):
        self.slow_spawn_timeout = slow_spawn_timeout
        self.extra_args = list(extra_args)  # more --Class.trait=value arguments
        self.extra_env = dict(env or {})
        self.state_dir = Path(state_dir)
        self.kubeconfig = kubeconfig and Path(kubeconfig)
        self.admin_token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.hub_port = free_port()
        self.proxy_api_port = free_port()
        self.log_file = self.state_dir / "hub.log"
        self.proc = None

    @property
    def hub_ip(self):
        """Where the hub's own API listens: where pods reach the host (see jupyterhub_config.py)."""
        kubeconfig = self.kubeconfig or self.state_dir / "localkube" / "kubeconfig"  # embedded
        return pod_reachable_ip(kubeconfig)

    @property
    def api_url(self):
        return f"{self.url}/hub/api/"

    def start(self, timeout=60):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **{k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
            "CRATER_STATE_DIR": str(self.state_dir),
            "CRATER_TEST_ADMIN_TOKEN": self.admin_token,
            **self.extra_env,
        }
        if self.kubeconfig:
            env["KUBECONFIG"] = str(self.kubeconfig)
            launcher = [str(JUPYTERHUB), "-f", str(CONFIG)]
        else:
            env["HOME"] = str(self.state_dir)  # no ~/.kube/config: nothing configured
            launcher = [str(REPO / "dev"), "run"]
        cmd = [
            *launcher,
            f"--JupyterHub.bind_url={self.url}",
            f"--JupyterHub.hub_port={self.hub_port}",
            f"--ConfigurableHTTPProxy.api_url=http://127.0.0.1:{self.proxy_api_port}",
            "--JupyterHub.cleanup_servers=False",
            "--Spawner.poll_interval=1",
            f'--JupyterHub.tornado_settings={{"slow_spawn_timeout": {self.slow_spawn_timeout}}}',
            *self.extra_args,
        ]
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.state_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the hub exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.api_url, timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"the hub did not answer within {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout=30):
        """SIGTERM, as an operator's restart does: the hub stops its proxy, not the servers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self):
        self.stop()
        return self.start()

    def log_tail(self, lines=40):
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Response:
    code: int
    data: object  # the decoded JSON body; None when the body is empty


async def request(url, method="GET", body=None, token=None):
    """An HTTP call whose non-empty answer must be JSON; returns its status and decoded body."""
    headers = {"Authorization": f"token {token}"} if token else {}
    if body is not None or method in ("POST", "PUT", "PATCH"):
        body = json.dumps(body or {})
    r = await AsyncHTTPClient().fetch(
        url,
        method=method,
        body=body,
        headers=headers,
        raise_error=False,
        follow_redirects=False,
        request_timeout=60,
    )
    if not r.body:
        return Response(r.code, None)
    content_type = r.headers.get("Content-Type", "")
    assert content_type.startswith("application/json"), (
        f"{method} {url}: {r.code} {content_type!r}: {r.body[:300]!r}"
    )
    return Response(r.code, json.loads(r.body))


async def api_request(hub, path, method="GET", body=None, token=None):
    """A hub REST API call (``path`` relative to ``/hub/api/``), as the admin unless ``token``."""
    return await request(hub.api_url + path, method, body, token or hub.admin_token)


def server_path(user, server=""):
    """The REST path of one of ``user``'s servers ("" is the default server)."""
    return f"users/{user}/servers/{server}" if server else f"users/{user}/server"


async def progress_events(hub, user, server="", timeout=90):
    """The events of the spawn progress stream (SSE) until the stream ends, as the spawn page sees.

    JupyterHub closes the stream after the event with ``ready`` (or ``failed``) set.
    """
    events = []
    buffer = b""

    def on_chunk(chunk):
        nonlocal buffer
        buffer += chunk
        *messages, buffer = buffer.split(b"\n\n")
        for message in messages:
            for line in message.splitlines():
                if line.startswith(b"data:"):
                    events.append(json.loads(line[5:]))

    req = HTTPRequest(
        f"{hub.api_url}{server_path(user, server)}/progress",
        headers={"Authorization": f"token {hub.admin_token}", "Accept": "text/event-stream"},
        streaming_callback=on_chunk,
        request_timeout=timeout,
    )
    r = await AsyncHTTPClient().fetch(req, raise_error=False)
    assert r.code == 200, f"progress stream for {user}/{server}: {r.code}"
    return events


@dataclass
class Spawn:
    seconds: float  # from the POST to the stream's "ready" event
    events: list


async def request_spawn(hub, user, options=None, server=""):
    """POST a spawn with ``options`` as the body (JupyterHub's ``user_options``); the answer."""
    return await api_request(hub, server_path(user, server), "POST", options or {})


async def spawn(hub, user, options=None, server=""):
    """Start one of ``user``'s servers through the REST API and follow it until ready."""
    began = time.monotonic()
    r = await request_spawn(hub, user, options, server)
    assert r.code in (201, 202), f"spawn {user}/{server}: {r.code} {r.data}"
    events = await progress_events(hub, user, server)
    seconds = time.monotonic() - began
    assert events and events[-1].get("ready"), f"spawn {user}/{server} did not become ready: {events}"
    return Spawn(seconds, events)


async def server_of(hub, user, server=""):
    """The server's model as the REST API shows it, or None when it has none."""
    r = await api_request(hub, f"users/{user}")
    return r.data["servers"].get(server)


async def stop_server(hub, user, server=""):
    """Stop one of ``user``'s servers (if any) and wait until the hub says it is gone."""
    r = await api_request(hub, server_path(user, server), "DELETE")
    assert r.code in (202, 204, 400, 404), r  # 400/404: no such server to stop
    await wait_for(lambda: _no_server(hub, user, server), timeout=60,
                   message=f"{user}'s server {server!r} to stop")


async def stop_all_servers(hub, user):
    r = await api_request(hub, f"users/{user}")
    if r.code == 200:
        for server in r.data["servers"]:
            await stop_server(hub, user, server)


async def _no_server(hub, user, server):
    return await server_of(hub, user, server) is None


_user_numbers = itertools.count()


def user_maker(hub):
    """A factory making users through the REST API, and the cleanup that removes them."""
    made = []

    async def make(prefix="user"):
        name = f"{prefix}-{next(_user_numbers)}"
        r = await api_request(hub, f"users/{name}", "POST")
        assert r.code == 201, r
        made.append(name)
        return name

    async def cleanup():
        for name in made:
            await stop_all_servers(hub, name)
            assert (await api_request(hub, f"users/{name}", "DELETE")).code == 204

    return make, cleanup
