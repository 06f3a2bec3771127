"""The service proxy: traffic to ``ClusterIP:port`` reaches a ready endpoint, as kube-proxy does.

There is no iptables or nftables on these machines, so this is kube-proxy's old *userspace* mode:
each Service's cluster IP is an address of the host on localkube's bridge (``ip addr add
<ip>/32 dev <bridge>``: pods route to the host, and the host delivers it locally), and each TCP
port of the Service has an asyncio listener on ``ClusterIP:port`` that splices every accepted
connection to one ready endpoint's ``IP:targetPort``, round robin (or the client's previous one
under ``sessionAffinity: ClientIP``), trying the next endpoint when one refuses.

A port without ready endpoints has no listener, so a connection is refused at once, as with
kube-proxy's REJECT rule. UDP and SCTP ports are not proxied. Backends see the connection coming
from the host's bridge address (userspace mode never kept the client's address either).

Addresses inside 127.0.0.0/8 need no ``ip addr`` (all of it is local on Linux): that is how the
unit tests run it without a bridge. Without a bridge (the loopback fallback), other cluster IPs
are not served.
"""

import asyncio
import ipaddress
import logging
import socket
import struct
import time

from .controller import Controller
from .endpoints import ready_addresses

log = logging.getLogger("localkube")

SERVICES = ("", "services")
ENDPOINTS = ("", "endpoints")
CONNECT_TIMEOUT = 5.0
CHUNK = 65536
DEFAULT_AFFINITY_SECONDS = 10800


async def ip_command(*args):
    """Run ``ip <args>``; (exit code, stderr text)."""
    proc = await asyncio.create_subprocess_exec("ip", *args, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    return proc.returncode, err.decode().strip()


def bridge_of(cluster):
    """The bridge of the cluster's isolated pod network, or None (loopback fallback, unit tests)."""
    network = getattr(cluster, "network", None)
    return network.bridge if network is not None and getattr(network, "isolated", False) else None


def _is_loopback(ip):
    return ipaddress.ip_address(ip).is_loopback


def _refuse(writer):
    """Close with a reset (what a client sees when nothing could take its connection)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.close()


async def _pump(reader, writer):
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


class PortProxy:
    """The listener of one Service port, with the endpoints it currently sends to."""

    def __init__(self, ip, port, affinity_seconds=None):
        self.ip, self.port = ip, port
        self.backends = []  # [(ip, port)]
        self.affinity_seconds = affinity_seconds
        self._affinity = {}  # client ip -> (backend, last used)
        self._next = 0
        self.server = None
        self.connections = set()

    async def open(self):
        self.server = await asyncio.start_server(self._accept, self.ip, self.port, reuse_address=True)

    async def close(self, connections=False):
        if self.server is not None:
            self.server.close()
            self.server = None
        if connections:
            for task in list(self.connections):
                task.cancel()
            await asyncio.gather(*self.connections, return_exceptions=True)

    def _order(self, client_ip):
        """The backends to try, the preferred one first."""
        n = len(self.backends)
        if self.affinity_seconds:
            kept = self._affinity.get(client_ip)
            if kept and kept[0] in self.backends and time.monotonic() - kept[1] < self.affinity_seconds:
                i = self.backends.index(kept[0])
                return self.backends[i:] + self.backends[:i]
        start = self._next % n
        self._next = start + 1
        return self.backends[start:] + self.backends[:start]

    async def _accept(self, reader, writer):
        task = asyncio.current_task()
        self.connections.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self.connections.discard(task)

    async def _serve(self, reader, writer):
        client_ip = (writer.get_extra_info("peername") or ("",))[0]
        upstream = None
        for backend in self._order(client_ip) if self.backends else []:
            try:
                upstream = await asyncio.wait_for(asyncio.open_connection(*backend), CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as e:
                log.info("proxy: %s:%s -> %s:%s: %s", self.ip, self.port, *backend, e)
                continue
            if self.affinity_seconds:
                now = time.monotonic()
                if len(self._affinity) > 1000:  # forget clients whose affinity has expired
                    self._affinity = {c: (b, t) for c, (b, t) in self._affinity.items()
                                      if now - t < self.affinity_seconds}
                self._affinity[client_ip] = (backend, now)
            break
        if upstream is None:
            _refuse(writer)
            return
        up_reader, up_writer = upstream
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            up_writer.close()
            writer.close()


class ServiceProxy(Controller):
    """Keeps one :class:`PortProxy` per TCP port of every Service with a cluster IP and ready
    endpoints, and the cluster IPs on the bridge while their Service exists."""

    watches = (SERVICES, ENDPOINTS)

    def __init__(self, cluster, device=None):
        super().__init__(cluster)
        self.device = device or bridge_of(cluster)  # where cluster IPs are added; None: only loopback ones are served
        self.ports = {}  # (namespace, name) -> {port number: PortProxy}
        self.addresses = {}  # (namespace, name) -> the cluster IP added to the device for it

    async def stop(self):
        await super().stop()
        for key in list(self.ports):
            await self._close_service(key, connections=True)
        for key in list(self.addresses):
            await self._drop_address(key)

    def _servable(self, ip):
        return _is_loopback(ip) or self.device is not None

    async def reconcile(self, key):
        _, ns, name = key
        svc = self.store.find(self.res("", "services"), ns, name)
        spec = (svc or {}).get("spec") or {}
        ip = spec.get("clusterIP")
        if svc is None or not ip or ip == "None" or spec.get("type") == "ExternalName" \
                or not self._servable(ip):
            await self._close_service((ns, name))
            await self._drop_address((ns, name))
            return None
        if self.addresses.get((ns, name)) not in (None, ip):
            await self._drop_address((ns, name))
        await self._add_address((ns, name), ip)
        ep = self.store.find(self.res("", "endpoints"), ns, name)
        subsets = (ep or {}).get("subsets") or []
        affinity = None
        if spec.get("sessionAffinity") == "ClientIP":
            affinity = (((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
                        .get("timeoutSeconds") or DEFAULT_AFFINITY_SECONDS)
        wanted = {}
        for p in spec.get("ports") or []:
            if p.get("protocol", "TCP") != "TCP":
                continue
            backends = [(addr, port) for addr, port, _ in ready_addresses(subsets, p.get("name", "")) if port]
            if backends:
                wanted[p["port"]] = backends
        current = self.ports.setdefault((ns, name), {})
        for port in [p for p in current if p not in wanted or current[p].ip != ip]:
            await current.pop(port).close()
        for port, backends in wanted.items():
            proxy = current.get(port)
            if proxy is None:
                proxy = current[port] = PortProxy(ip, port, affinity)  # recorded first: stop() closes it
                try:
                    await proxy.open()
                except OSError as e:
                    del current[port]
                    log.warning("proxy: cannot listen on %s:%s for service %s/%s: %s", ip, port, ns, name, e)
                    return 1.0
            proxy.backends = backends
            proxy.affinity_seconds = affinity
        return None

    async def _close_service(self, key, connections=False):
        for proxy in self.ports.pop(key, {}).values():
            await proxy.close(connections)

    async def _add_address(self, key, ip):
        if key in self.addresses or _is_loopback(ip):
            return
        self.addresses[key] = ip  # first: a stop() while `ip` runs still removes it
        code, err = await ip_command("addr", "add", f"{ip}/32", "dev", self.device)
        if code != 0 and "exists" not in err:
            del self.addresses[key]
            raise OSError(f"ip addr add {ip}/32 dev {self.device}: {err}")

    async def _drop_address(self, key):
        ip = self.addresses.pop(key, None)
        if ip is None:
            return
        code, err = await ip_command("addr", "del", f"{ip}/32", "dev", self.device)
        if code != 0 and "Cannot assign" not in err:
            log.warning("proxy: ip addr del %s/32 dev %s: %s", ip, self.device, err)
