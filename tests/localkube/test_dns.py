"""Cluster DNS answers as CoreDNS does, checked with two independent resolvers: c-ares (aiodns)
for the records, and glibc (``getent`` in a private mount view with its own resolv.conf, the way a
pod's view has one) for the search path."""

import asyncio
import os
import random
import shutil

import aiodns
import pytest

from crater_hub.localkube.dns import DNSServer
from crater_hub.localkube.endpoints import EndpointsController
from tests.localkube.helpers import wait_for
from tests.localkube.test_endpoints import endpoints, pod, service


@pytest.fixture
async def dns(make_cluster):
    """(cluster, server, resolver): a server on a random loopback address, port 53 when root."""
    cluster = make_cluster()
    cluster.start(EndpointsController)
    host = f"127.{random.randrange(2, 250)}.{random.randrange(0, 255)}.{random.randrange(1, 254)}"
    server = await DNSServer(cluster.store, cluster.registry, host, 53 if os.geteuid() == 0 else 0).start()
    resolver = aiodns.DNSResolver(nameservers=[host], udp_port=server.port, tcp_port=server.port, tries=1,
                                  timeout=2)
    yield cluster, server, resolver
    await resolver.close()
    await server.stop()


async def a_records(resolver, name):
    result = await resolver.query_dns(name, "A")
    return sorted(r.data.addr for r in result.answer if r.type == 1)


async def error_of(resolver, name, qtype="A"):
    with pytest.raises(aiodns.error.DNSError) as caught:
        await resolver.query_dns(name, qtype)
    return caught.value.args[0]


async def test_services_headless_pods_and_unknown_names(dns):
    cluster, _, resolver = dns
    ip = service(cluster, "web", ports=[{"port": 80}])["spec"]["clusterIP"]
    assert await a_records(resolver, "web.default.svc.cluster.local") == [ip]
    assert await a_records(resolver, "WEB.Default.svc.cluster.local.") == [ip]
    assert await error_of(resolver, "web.default.svc.cluster.local", "AAAA") == aiodns.error.ARES_ENODATA
    assert await error_of(resolver, "nope.default.svc.cluster.local") == aiodns.error.ARES_ENOTFOUND
    assert await error_of(resolver, "web.elsewhere.svc.cluster.local") == aiodns.error.ARES_ENOTFOUND
    assert await error_of(resolver, "example.com") == aiodns.error.ARES_ENOTFOUND

    service(cluster, "workers", selector={"app": "ray"}, clusterIP="None", ports=[{"name": "http", "port": 80,
                                                                                   "targetPort": 8080}])
    assert await error_of(resolver, "workers.default.svc.cluster.local") == aiodns.error.ARES_ENOTFOUND
    pod(cluster, "w-0", "127.1.0.20", {"app": "ray"}, hostname="w0", subdomain="workers")
    pod(cluster, "w-1", "127.1.0.21", {"app": "ray"})
    pod(cluster, "w-2", "127.1.0.22", {"app": "ray"}, ready=False)
    await wait_for(lambda: (endpoints(cluster, "workers") or {}).get("subsets"), message="endpoints")
    assert await a_records(resolver, "workers.default.svc.cluster.local") == ["127.1.0.20", "127.1.0.21"]
    assert await a_records(resolver, "w0.workers.default.svc.cluster.local") == ["127.1.0.20"]
    assert await a_records(resolver, "127-1-0-21.workers.default.svc.cluster.local") == ["127.1.0.21"]
    assert await error_of(resolver, "w1.workers.default.svc.cluster.local") == aiodns.error.ARES_ENOTFOUND
    assert await a_records(resolver, "10-1-2-3.default.pod.cluster.local") == ["10.1.2.3"]

    result = await resolver.query_dns("_http._tcp.workers.default.svc.cluster.local", "SRV")
    assert sorted((r.data.port, r.data.target) for r in result.answer) == [
        (8080, "127-1-0-21.workers.default.svc.cluster.local"), (8080, "w0.workers.default.svc.cluster.local")]
    service(cluster, "api", ports=[{"name": "grpc", "port": 50051, "targetPort": 9000}])
    result = await resolver.query_dns("_grpc._tcp.api.default.svc.cluster.local", "SRV")
    assert [(r.data.port, r.data.target) for r in result.answer] == [(50051, "api.default.svc.cluster.local")]
    assert await error_of(resolver, "_grpc._udp.api.default.svc.cluster.local", "SRV") == aiodns.error.ARES_ENOTFOUND

    service(cluster, "db", type="ExternalName", externalName="db.example.org")
    result = await resolver.query_dns("db.default.svc.cluster.local", "CNAME")
    assert [r.data.cname for r in result.answer] == ["db.example.org"]
    service(cluster, "bad", type="ExternalName", externalName="x" * 70 + ".example.org")
    assert await error_of(resolver, "bad.default.svc.cluster.local") == aiodns.error.ARES_ESERVFAIL
    assert await a_records(resolver, "web.default.svc.cluster.local") == [ip]  # still serving


async def test_many_endpoints_are_truncated_over_udp_and_complete_over_tcp(dns):
    cluster, _, resolver = dns
    service(cluster, "big", selector={"app": "big"}, clusterIP="None")
    for i in range(60):
        pod(cluster, f"big-{i}", f"127.1.1.{i + 1}", {"app": "big"})
    await wait_for(lambda: len(((endpoints(cluster, "big") or {}).get("subsets") or [{}])[0].get("addresses", []))
                   == 60, message="60 endpoints")
    assert len(await a_records(resolver, "big.default.svc.cluster.local")) == 60  # c-ares retried over TCP


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
async def test_glibc_resolves_short_names_through_the_search_path(dns, tmp_path):
    cluster, server, _ = dns
    ip = service(cluster, "web", ports=[{"port": 80}])["spec"]["clusterIP"]
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {server.host}\n"
                      "search default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n")

    async def getent(name):
        proc = await asyncio.create_subprocess_exec(
            "unshare", "--mount", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && getent ahostsv4 "$1"',
            str(resolv), name, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
        return proc.returncode, {line.split()[0] for line in out.decode().splitlines() if line.strip()}

    for name in ("web", "web.default", "web.default.svc", "web.default.svc.cluster.local"):
        assert await getent(name) == (0, {ip}), name
    code, _ = await getent("nothing-here")
    assert code == 2


async def test_malformed_queries_get_formerr_and_the_server_keeps_answering(dns):
    _, server, resolver = dns
    loop = asyncio.get_running_loop()
    replies = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            replies.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=(server.host, server.port))
    try:
        # id 0x1234, RD, one question whose name runs past the end of the message
        transport.sendto(bytes.fromhex("1234 0100 0001 0000 0000 0000 05 6162"))
        reply = await asyncio.wait_for(replies.get(), 5)
        assert reply[:2] == b"\x12\x34" and reply[3] & 0x0F == 1  # FORMERR
        transport.sendto(b"\x00")  # not even a header: no answer
        assert await error_of(resolver, "nothing.default.svc.cluster.local") == aiodns.error.ARES_ENOTFOUND
    finally:
        transport.close()
