"""Cluster DNS: a small authoritative server for ``cluster.local``, answering as CoreDNS does.

Pods' ``/etc/resolv.conf`` points at it (the host's address on localkube's bridge, port 53) with
the search path ``<ns>.svc.cluster.local svc.cluster.local cluster.local``, so ``<svc>``,
``<svc>.<ns>`` and ``<svc>.<ns>.svc`` all become ``<svc>.<ns>.svc.cluster.local`` in the pod's own
resolver. Names answered (TTL 5 s, read from the store on every query):

- ``<svc>.<ns>.svc.cluster.local``: the cluster IP; a headless Service's ready endpoint IPs
  (NXDOMAIN while it has none, as CoreDNS); an ExternalName Service's CNAME;
- ``<hostname>.<svc>.<ns>.svc.cluster.local``: the endpoint of a headless Service whose pod has
  that ``hostname`` and ``subdomain: <svc>``; ``<a-b-c-d>.<svc>.<ns>.svc.cluster.local`` for its
  endpoints by address;
- ``<a-b-c-d>.<ns>.pod.cluster.local``: ``a.b.c.d`` (CoreDNS ``pods insecure``, kubeadm's default);
- ``_<port>._<proto>.<svc>.<ns>.svc.cluster.local``: SRV records of a named port (the Service's
  name and port; a headless Service's endpoints by hostname or dashed address, and their port).

Other record types of a name that exists get an empty NOERROR answer (so AAAA lookups do not hide
the A record); every other name is NXDOMAIN — nothing is forwarded off the machine. No PTR or SOA
records, no additional section; UDP answers over 512 bytes are truncated (TC) and the client
retries over TCP, which is served too. The wire format (RFC 1035) is written here: it is small.
"""

import asyncio
import ipaddress
import logging
import struct

from .endpoints import ready_addresses

log = logging.getLogger("localkube")

DOMAIN = "cluster.local"
TTL = 5
UDP_LIMIT = 512

TYPE_A, TYPE_CNAME, TYPE_AAAA, TYPE_SRV, TYPE_ANY = 1, 5, 28, 33, 255
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP = 0, 1, 2, 3, 4


class FormatError(ValueError):
    """A query that cannot be parsed."""


# -- wire format --------------------------------------------------------------------------------


def read_name(data, offset):
    """(name without the final dot, offset after it) of a possibly compressed name."""
    labels = []
    end = None
    for _ in range(128):  # bounds pointer loops
        if offset >= len(data):
            raise FormatError("name runs past the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise FormatError("truncated pointer")
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length & 0xC0:
            raise FormatError("bad label type")
        offset += 1
        if length == 0:
            return ".".join(labels), end if end is not None else offset
        labels.append(data[offset:offset + length].decode("ascii", "replace"))
        offset += length
    raise FormatError("too many labels or pointers")


def encode_name(name):
    out = bytearray()
    for label in name.strip(".").split(".") if name.strip(".") else []:
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad label {label!r}")
        out += bytes([len(raw)]) + raw
    return bytes(out + b"\0")


def parse_query(data):
    """(id, flags, qname, qtype, qclass, end of the question) of a query."""
    if len(data) < 12:
        raise FormatError("short header")
    qid, flags, qdcount = struct.unpack("!HHH", data[:6])
    if qdcount != 1:
        raise FormatError(f"{qdcount} questions")
    name, offset = read_name(data, 12)
    if offset + 4 > len(data):
        raise FormatError("short question")
    qtype, qclass = struct.unpack("!HH", data[offset:offset + 4])
    return qid, flags, name, qtype, qclass, offset + 4


def response(query, rcode, answers=(), limit=None):
    """A reply to ``query`` (raw bytes) with ``answers`` [(type, rdata)] for its question name.

    With ``limit`` (UDP), answers that do not fit are dropped and TC is set.
    """
    qid, flags, _, _, _, qend = parse_query(query)
    question = query[12:qend]
    records = []
    for rtype, rdata in answers:
        records.append(struct.pack("!HHHIH", 0xC00C, rtype, CLASS_IN, TTL, len(rdata)) + rdata)
    truncated = False
    if limit is not None:
        room = limit - 12 - len(question)
        kept = []
        for r in records:
            if len(r) > room:
                truncated = True
                break
            kept.append(r)
            room -= len(r)
        records = kept
    opcode = (flags >> 11) & 0xF
    rd = flags & 0x0100
    out_flags = 0x8000 | (opcode << 11) | 0x0400 | (0x0200 if truncated else 0) | rd | 0x0080 | rcode
    header = struct.pack("!HHHHHH", qid, out_flags, 1, len(records), 0, 0)
    return header + question + b"".join(records)


def error_response(query, rcode):
    """A header-only reply (for queries too broken to echo), or None if there is no header."""
    if len(query) < 12:
        return None
    qid, flags = struct.unpack("!HH", query[:4])
    out_flags = 0x8000 | (flags & 0x7900) | 0x0080 | rcode
    return struct.pack("!HHHHHH", qid, out_flags, 0, 0, 0, 0)


def _rdata(rtype, value):
    if rtype == TYPE_A:
        return ipaddress.IPv4Address(value).packed
    if rtype == TYPE_SRV:
        priority, weight, port, target = value
        return struct.pack("!HHH", priority, weight, port) + encode_name(target)
    return encode_name(value)


# -- the zone -----------------------------------------------------------------------------------


def _dashed_ip(label):
    try:
        return str(ipaddress.IPv4Address(label.replace("-", ".")))
    except ValueError:
        return None


class ClusterZone:
    """Answers for names under ``cluster.local``, from the objects in the store."""

    def __init__(self, store, registry, domain=DOMAIN):
        self.store, self.registry, self.domain = store, registry, domain
        self.services = registry.lookup("", "v1", "services")
        self.endpoints = registry.lookup("", "v1", "endpoints")
        self.namespaces = registry.lookup("", "v1", "namespaces")

    def lookup(self, name):
        """(rcode, [(type, value)]) for a name: values are IPv4 strings (A) or names (CNAME)."""
        name = name.lower().rstrip(".")
        if name == self.domain:
            return NOERROR, []
        if not name.endswith("." + self.domain):
            return NXDOMAIN, []
        labels = name[:-len(self.domain) - 1].split(".")
        kind = labels[-1]
        if kind not in ("svc", "pod"):
            return NXDOMAIN, []
        rest = labels[:-1]
        if not rest:
            return NOERROR, []  # svc.cluster.local, pod.cluster.local
        ns = rest[-1]
        if self.store.find(self.namespaces, None, ns) is None:
            return NXDOMAIN, []
        rest = rest[:-1]
        if kind == "pod":
            if not rest:
                return NOERROR, []
            ip = _dashed_ip(rest[0]) if len(rest) == 1 else None
            return (NOERROR, [(TYPE_A, ip)]) if ip else (NXDOMAIN, [])
        if not rest:
            return NOERROR, []  # <ns>.svc.cluster.local
        if len(rest) == 3 and rest[0].startswith("_") and rest[1] in ("_tcp", "_udp", "_sctp"):
            return self._srv(ns, rest[2], rest[0][1:], rest[1][1:].upper())
        if len(rest) > 2:
            return NXDOMAIN, []
        svc = self.store.find(self.services, ns, rest[-1])
        if svc is None:
            return NXDOMAIN, []
        spec = svc.get("spec") or {}
        if spec.get("type") == "ExternalName":
            target = spec.get("externalName")
            return (NOERROR, [(TYPE_CNAME, target)]) if len(rest) == 1 and target else (NXDOMAIN, [])
        headless = spec.get("clusterIP") == "None"
        if len(rest) == 1 and not headless:
            return NOERROR, [(TYPE_A, spec["clusterIP"])] if spec.get("clusterIP") else []
        ep = self.store.find(self.endpoints, ns, rest[-1])
        addresses = ready_addresses((ep or {}).get("subsets"))
        if len(rest) == 2:
            wanted = rest[0]
            addresses = [a for a in addresses
                         if (a[2] or "").lower() == wanted or a[0] == _dashed_ip(wanted)]
        ips = list(dict.fromkeys(a[0] for a in addresses))
        if not ips:
            return NXDOMAIN, []
        return NOERROR, [(TYPE_A, ip) for ip in ips]

    def _srv(self, ns, name, port_name, protocol):
        """SRV records of a named port: the Service's name and port, or a headless one's endpoints."""
        svc = self.store.find(self.services, ns, name)
        port = next((p for p in ((svc or {}).get("spec") or {}).get("ports") or []
                     if p.get("name", "").lower() == port_name and p.get("protocol", "TCP") == protocol), None)
        if port is None:
            return NXDOMAIN, []
        base = f"{name}.{ns}.svc.{self.domain}"
        if svc["spec"].get("clusterIP") != "None":
            return NOERROR, [(TYPE_SRV, (0, 100, port["port"], base))]
        ep = self.store.find(self.endpoints, ns, name)
        targets = [(f"{(host or ip.replace('.', '-'))}.{base}", target_port)
                   for ip, target_port, host in ready_addresses((ep or {}).get("subsets"), port.get("name", ""))]
        if not targets:
            return NXDOMAIN, []
        weight = max(1, 100 // len(targets))
        return NOERROR, [(TYPE_SRV, (0, weight, p, target)) for target, p in targets]

    def answer(self, query, limit=None):
        """The reply to one raw query message, or None to stay silent."""
        try:
            _, flags, name, qtype, qclass, _ = parse_query(query)
        except (FormatError, struct.error):
            return error_response(query, FORMERR)
        if (flags >> 11) & 0xF != 0:
            return response(query, NOTIMP, limit=limit)
        if flags & 0x8000:
            return None  # a response sent to us: ignore
        try:
            rcode, records = self.lookup(name)
            answers = []
            if qclass in (CLASS_IN, TYPE_ANY):
                for rtype, value in records:
                    if rtype == TYPE_CNAME and qtype != TYPE_CNAME:
                        answers.append((TYPE_CNAME, encode_name(value)))
                    elif rtype == qtype or qtype == TYPE_ANY:
                        answers.append((rtype, _rdata(rtype, value)))
        except Exception:  # a bad object (say an ExternalName no DNS name can hold) fails one answer
            log.exception("dns: answering %s failed", name)
            return response(query, SERVFAIL, limit=limit)
        return response(query, rcode, answers, limit=limit)


# -- the server ---------------------------------------------------------------------------------


class _UDP(asyncio.DatagramProtocol):
    def __init__(self, zone):
        self.zone = zone
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        reply = self.zone.answer(data, limit=UDP_LIMIT)
        if reply is not None:
            self.transport.sendto(reply, addr)


class DNSServer:
    """The zone served over UDP and TCP on one address (the bridge's gateway address, port 53)."""

    def __init__(self, store, registry, host, port=53, domain=DOMAIN):
        self.zone = ClusterZone(store, registry, domain)
        self.host, self.port = host, port
        self._udp = None
        self._tcp = None
        self._clients = set()  # TCP connections being served

    async def start(self):
        loop = asyncio.get_running_loop()
        self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port, reuse_address=True)
        if self.port == 0:
            self.port = self._tcp.sockets[0].getsockname()[1]
        self._udp, _ = await loop.create_datagram_endpoint(lambda: _UDP(self.zone),
                                                            local_addr=(self.host, self.port))
        log.info("cluster DNS for %s at %s:%s", self.zone.domain, self.host, self.port)
        return self

    async def stop(self):
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)

    async def _serve_tcp(self, reader, writer):
        task = asyncio.current_task()
        self._clients.add(task)
        try:
            while True:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                reply = self.zone.answer(await reader.readexactly(size))
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()
