"""The userspace service proxy: ClusterIP:port reaches ready endpoints, round robin.

Run on loopback: a service CIDR inside 127.0.0.0/8 is local without ``ip addr``, so no bridge is
needed; backends are real TCP servers on their own loopback addresses.
"""

import asyncio
import random

import pytest

from crater_hub.localkube.endpoints import EndpointsController
from crater_hub.localkube.proxy import ServiceProxy
from tests.localkube.helpers import wait_for
from tests.localkube.test_endpoints import pod, service, set_ready


@pytest.fixture
def loopback_net():
    """A random 127.a.b.0/24 (parallel runs rarely share one): its .1.. for backends, a /28 for services."""
    a, b = random.randrange(2, 250), random.randrange(0, 255)
    return f"127.{a}.{b}"


async def backend(host, reply):
    async def serve(reader, writer):
        data = await reader.readline()
        writer.write(reply + b":" + data)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, host, 0)


async def ask(ip, port, text=b"hello\n"):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 5)
    writer.write(text)
    await writer.drain()
    out = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return out


async def test_cluster_ip_reaches_ready_pods_round_robin_and_refuses_without_endpoints(make_cluster, loopback_net):
    cluster = make_cluster(service_cidr=f"{loopback_net}.128/28")
    servers = [await backend(f"{loopback_net}.{i}", f"pod{i}".encode()) for i in (1, 2)]
    port = servers[0].sockets[0].getsockname()[1]
    port2 = servers[1].sockets[0].getsockname()[1]
    try:
        cluster.start(EndpointsController, ServiceProxy)
        svc = service(cluster, "web", selector={"app": "web"},
                      ports=[{"name": "http", "port": 8080, "targetPort": "http"}])
        ip = svc["spec"]["clusterIP"]
        assert ip.startswith(f"{loopback_net}.")
        pod(cluster, "web-1", f"{loopback_net}.1", {"app": "web"}, ports=[{"name": "http", "containerPort": port}])
        pod(cluster, "web-2", f"{loopback_net}.2", {"app": "web"}, ready=False,
            ports=[{"name": "http", "containerPort": port2}])

        async def answers():
            try:
                return await ask(ip, 8080)
            except OSError:
                return None

        assert await wait_for(answers, message="proxied answer") == b"pod1:hello\n"
        set_ready(cluster, "web-2", True)

        async def both():
            seen = {await answers() for _ in range(4)}
            return seen == {b"pod1:hello\n", b"pod2:hello\n"}

        await wait_for(both, message="round robin over both pods")
        set_ready(cluster, "web-1", False)
        set_ready(cluster, "web-2", False)

        async def refused():
            try:
                await ask(ip, 8080)
            except ConnectionRefusedError:
                return True
            except OSError:
                pass  # reset: the listener closed while this connection waited to be accepted
            return False

        await wait_for(refused, message="refused without ready endpoints")
        set_ready(cluster, "web-1", True)
        assert await wait_for(answers, message="back") == b"pod1:hello\n"
        cluster.store.delete(cluster.res("", "services"), "default", "web")
        await wait_for(refused, message="refused once the service is gone")
    finally:
        for s in servers:
            s.close()


async def test_client_ip_affinity_keeps_a_client_on_one_endpoint(make_cluster, loopback_net):
    cluster = make_cluster(service_cidr=f"{loopback_net}.128/28")
    servers = [await backend(f"{loopback_net}.{i}", f"pod{i}".encode()) for i in (1, 2)]
    try:
        _, proxy = cluster.start(EndpointsController, ServiceProxy)
        ip = service(cluster, "sticky", selector={"app": "s"}, sessionAffinity="ClientIP",
                     ports=[{"name": "http", "port": 8080, "targetPort": "http"}])["spec"]["clusterIP"]
        for i, server in zip((1, 2), servers, strict=True):
            pod(cluster, f"s-{i}", f"{loopback_net}.{i}", {"app": "s"},
                ports=[{"name": "http", "containerPort": server.sockets[0].getsockname()[1]}])

        async def answers():
            try:
                return await ask(ip, 8080)
            except OSError:
                return None

        await wait_for(lambda: len(getattr(proxy.ports.get(("default", "sticky"), {}).get(8080), "backends", ()))
                       == 2, message="the proxy sends to both endpoints")
        first = await wait_for(answers, message="proxied answer")
        assert {await answers() for _ in range(6)} == {first}
    finally:
        for s in servers:
            s.close()

