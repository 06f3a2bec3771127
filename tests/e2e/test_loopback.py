"""localkube's fallback without namespaces (``LOCALKUBE_ISOLATION=loopback``) still runs a spawn.

Without root, pods are host processes on a loopback address each (see the localkube README):
a real hub spawns a server there, reaches it through the proxy, and the pod's address is on
127.1.0.0/16, the hub's API on 127.0.0.1.
"""

import pytest
from kubernetes_asyncio import client

from crater_hub.localkube import LocalKubeProcess
from tests.localkube_api import api_client

from .hub import HubProcess, request, server_of, spawn, user_maker


@pytest.fixture(scope="module")
def loopback_cluster(e2e_dir):
    cluster = LocalKubeProcess(e2e_dir / "loopback-localkube", tie_to_parent=True,
                               env={"LOCALKUBE_ISOLATION": "loopback"}).start(timeout=60)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def loopback_hub(e2e_dir, loopback_cluster):
    process = HubProcess(e2e_dir / "loopback-hub", loopback_cluster.kubeconfig).start()
    yield process
    process.stop()


async def test_spawn_on_the_loopback_fallback(loopback_cluster, loopback_hub):
    assert loopback_cluster.network["isolation"] == "loopback"
    assert loopback_hub.hub_ip == "127.0.0.1"
    make, cleanup = user_maker(loopback_hub)
    try:
        user = await make("loop")
        await spawn(loopback_hub, user)
        r = await request(f"{loopback_hub.url}/hub/api/users/{user}/tokens", "POST",
                          {"note": "e2e"}, token=loopback_hub.admin_token)
        token = r.data["token"]
        status = await request(f"{loopback_hub.url}/user/{user}/api/status", token=token)
        assert status.code == 200 and "last_activity" in status.data, status

        async with api_client(loopback_cluster.kubeconfig) as api:
            name = (await server_of(loopback_hub, user))["state"]["pod_name"]
            pod = await client.CoreV1Api(api).read_namespaced_pod(name, "default")
        assert pod.status.pod_ip.startswith("127.1.")
    finally:
        await cleanup()
