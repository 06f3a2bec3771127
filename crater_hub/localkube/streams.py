"""The websocket face of ``pods/exec`` and ``pods/portforward``.

A request is checked as the API server checks it before it upgrades anything (the pod exists and
has a node, the options are valid, the container runs), so those failures are plain HTTP
``Status`` answers a client can read; then the websocket's subprotocol picks the wire format,
the client's first choice that we speak (as the kubelet's ``wsstream`` negotiates), and a
session from :mod:`.execute` or :mod:`.portforward` does the work. No SPDY upgrade: a client that
is not on websockets (kubectl < 1.30) is answered "Upgrade request required".
"""

import asyncio
import functools
import json
import logging

from tornado import websocket

from . import execute, portforward
from .errors import ApiError, bad_request
from .logs import pick_container
from .server import BaseHandler

log = logging.getLogger("localkube")

EXEC_FLAGS = {"stdin": "false", "stdout": "true", "stderr": "true", "tty": "false"}  # PodExecOptions defaults
FORWARD_PROTOCOLS = (portforward.SPDY_PROTOCOL, *portforward.CHANNEL_PROTOCOLS)
STATUS_PROTOCOLS = ("v4.channel.k8s.io", "v5.channel.k8s.io")  # the error channel carries a Status


def _kubelet(cluster):
    from .kubelet import Kubelet

    return next(c for c in cluster.controllers if isinstance(c, Kubelet))


def _flag(handler, name):
    value = handler.get_argument(name, EXEC_FLAGS[name]).lower()
    if value not in ("true", "1", "false", "0"):
        raise bad_request(f'invalid value for the query parameter "{name}": "{value}" (allowed: true, false)')
    return value in ("true", "1")


class PodStreamHandler(BaseHandler, websocket.WebSocketHandler):
    """``/api/v1/namespaces/<ns>/pods/<name>/(exec|portforward)``: one websocket, one session."""

    session = None
    task = None
    protocol = None

    async def prepare(self):
        namespace, name, action = self.path_args
        pod = self.store.get(self.registry.lookup("", "v1", "pods"), namespace, name)
        if not pod["spec"].get("nodeName"):
            raise bad_request(f"pod {name} does not have a host assigned")
        offered = [p.strip() for p in self.request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        supported = execute.PROTOCOLS if action == "exec" else FORWARD_PROTOCOLS
        self.protocol = next((p for p in offered if p in supported), None)
        if offered and self.protocol is None:
            raise bad_request(f"requested protocol(s) are not supported: {offered}; supported: {list(supported)}")
        if action == "exec":
            self._starter = self._exec_starter(pod)
        else:
            self._starter = self._forward_starter(pod)
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            raise bad_request("Upgrade request required")

    def select_subprotocol(self, subprotocols):
        return self.protocol

    # check_origin stays tornado's: API clients send no Origin header; a web page in a browser on
    # this machine must not reach into pods (localkube authenticates nobody).

    def _exec_starter(self, pod):
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        command = self.get_arguments("command")
        if not command:
            raise bad_request('you must specify at least 1 command (the query parameter "command", once per argument)')
        flags = {flag: _flag(self, flag) for flag in EXEC_FLAGS}
        if not (flags["stdin"] or flags["stdout"] or flags["stderr"]):
            raise bad_request("you must specify at least 1 of stdin, stdout, stderr")
        container = pick_container(pod, self.get_argument("container", None))
        try:
            env, cwd, preexec_fn = _kubelet(self.cluster).enter(namespace, name, container)
        except LookupError:  # what a kubelet answers for a container that is not running
            raise ApiError(500, "InternalError", f'container not found ("{container}")') from None
        return functools.partial(self._start_exec, command, env, cwd, preexec_fn, flags)

    def _forward_starter(self, pod):
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        phase = pod.get("status", {}).get("phase")
        if phase != "Running":
            raise bad_request(f"unable to forward port because pod is not running. Current status={phase}")
        connect = functools.partial(_kubelet(self.cluster).open_connection, namespace, name)
        describe = f"{namespace}/{name}, uid {pod['metadata']['uid']}"
        if self.protocol == portforward.SPDY_PROTOCOL:
            return functools.partial(self._start_spdy_forward, connect, describe)
        try:
            ports = portforward.parse_ports(self.get_arguments("ports"))
        except ValueError as e:
            raise bad_request(str(e)) from None
        if not ports:
            raise bad_request('at least one port must be given in the query parameter "ports"')
        return functools.partial(self._start_channel_forward, connect, describe, ports)

    # -- the websocket ------------------------------------------------------------------------

    async def open(self, *_):
        self.set_nodelay(True)
        await self._starter()

    async def on_message(self, message):
        if isinstance(message, bytes) and self.session is not None:
            await self.session.receive(message)

    def on_close(self):
        if self.task is not None:
            self.task.cancel()
        if self.session is not None:
            asyncio.ensure_future(self.session.close())

    async def _send(self, data):
        await self.write_message(data, binary=True)

    async def _send_channel(self, channel, data):
        await self.write_message(bytes([channel]) + data, binary=True)

    def _run(self, work):
        """Run ``work`` to its end, then close the websocket normally (the clients' end of data)."""

        async def run():
            try:
                await work
            except websocket.WebSocketClosedError:
                return
            except Exception:
                log.exception("%s %s failed", self.request.method, self.request.path)
                self.close(1011, "internal error")  # not a normal close: the client sees it failed
                return
            self.close(1000)

        self.task = asyncio.create_task(run())

    # -- sessions -----------------------------------------------------------------------------

    async def _start_exec(self, command, env, cwd, preexec_fn, flags):
        self.session = execute.ExecSession(self._send_channel, command, env, cwd, preexec_fn, **flags)
        failure = await self.session.start()

        async def work():
            status = failure or await self.session.run()
            if self.protocol in STATUS_PROTOCOLS:
                await self._send_channel(execute.ERROR, json.dumps(status).encode())
            elif status["status"] != "Success":
                await self._send_channel(execute.ERROR, status["message"].encode())

        self._run(work())

    async def _start_channel_forward(self, connect, describe, ports):
        self.session = portforward.ChannelForwarder(self._send, connect, describe, ports)
        self._run(self.session.run())

    async def _start_spdy_forward(self, connect, describe):
        self.session = portforward.SpdyForwarder(self._send, connect, describe)
        self._run(self.session.done)


ROUTE = r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/(exec|portforward)/?"
