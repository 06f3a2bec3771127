"""The containerd commit backend end to end: the hub side creates the commit Job on localkube,
the Job's pod runs the commit program against a real containerd (Debian's, with runc, as root)
through its hostPath socket, pushes to the real registry, and the backend relays its progress
and maps its outcome.

The "server" is a container the test starts on that containerd in the kubelet's namespace; the
pod dict handed to the backend is what the API shows of a server pod on that node (containerID
``containerd://<id>``, nodeName). localkube stands in for the cluster that runs the Job; its pods
are isolated in their own network namespace, so the Job runs with ``hostNetwork`` to reach the
registry on 127.0.0.1.
"""

import asyncio
import base64
import json
import os

import pytest

from crater_hub.images.backends.base import CommitFailed, CommitRequest, Reporter
from crater_hub.images.local_registry import PULL_USER, PUSH_USER

from .test_containerd import base_image, node, pulled, server  # noqa: F401 (fixtures)

NAMESPACE = "crater-system"


class Recorder(Reporter):
    """What the service's reporter would receive, kept in order."""

    def __init__(self):
        self.events = []

    async def phase(self, phase):
        self.events.append(("phase", phase))

    def progress(self, fraction):
        self.events.append(("progress", fraction))

    def log(self, line):
        self.events.append(("log", line))

    def phases(self):
        return [value for kind, value in self.events if kind == "phase"]


async def push_secret(core, registry, password=None):
    """The push Secret of the system namespace, as the admin makes it (docs/deploy.md)."""
    from kubernetes_asyncio.client.exceptions import ApiException

    raw = f"{PUSH_USER}:{password or registry.credentials()[PUSH_USER]}".encode()
    config = {"auths": {registry.host: {"auth": base64.b64encode(raw).decode()}}}
    body = {"metadata": {"name": "crater-registry-push", "namespace": NAMESPACE},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()}}
    try:
        await core.create_namespaced_secret(NAMESPACE, body)
    except ApiException as e:
        assert e.status == 409
        await core.replace_namespaced_secret("crater-registry-push", NAMESPACE, body)


@pytest.fixture
async def cluster(images_cluster, registry, monkeypatch):
    """The API of localkube for this test's loop, the commit namespace made."""
    from kubernetes_asyncio.client.exceptions import ApiException

    from crater_hub.kube.caches import stop_shared_caches
    from crater_hub.kube.client import close_shared_clients, load_configuration, shared_client

    monkeypatch.setenv("KUBECONFIG", str(images_cluster.kubeconfig))
    load_configuration.cache_clear()
    core = shared_client("CoreV1Api")
    try:
        await core.create_namespace({"metadata": {"name": NAMESPACE}})
    except ApiException as e:
        assert e.status == 409
    await push_secret(core, registry)
    yield core
    await stop_shared_caches()
    await close_shared_clients()
    load_configuration.cache_clear()


def backend_for(registry, node, max_commit_size="40Gi"):  # noqa: F811
    from crater_hub.images.backends.containerd import ContainerdCommitBackend
    from crater_hub.images.settings import CraterImages

    settings = CraterImages(
        registry_url=registry.url, commit_namespace=NAMESPACE,
        commit_job_image="python:3.11", commit_timeout=120, max_commit_size=max_commit_size)
    # the Job's image: localkube's "python" entry, this machine's root with our venv first on PATH
    # (where crater-commit is)
    return ContainerdCommitBackend(settings, socket=node.socket, host_network=True)


def server_pod(node_name, container, image):
    return {"metadata": {"name": "jupyter-alice", "namespace": "crater-users"},
            "spec": {"nodeName": node_name, "containers": [{"name": "notebook", "image": image}]},
            "status": {"containerStatuses": [{"name": "notebook", "containerID": f"containerd://{container}",
                                              "image": image,
                                              "state": {"running": {"startedAt": "2026-12-06T00:00:00Z"}}}]}}


async def first_node(core):
    return (await core.list_node()).items[0].metadata.name


async def no_commit_jobs_left(core):
    from crater_hub.kube.client import shared_client

    batch = shared_client("BatchV1Api")
    deadline = asyncio.get_running_loop().time() + 30
    while (await batch.list_namespaced_job(NAMESPACE)).items:
        assert asyncio.get_running_loop().time() < deadline, "the commit Job was not deleted"
        await asyncio.sleep(0.2)


async def test_backend_commits_through_a_job_on_the_node(cluster, node, pulled, registry,  # noqa: F811
                                                         tmp_path, push_client):
    container = server(node, pulled, "srv-job", tmp_path / "home")
    try:
        node.exec(container, "/bin/sh", "-c", "echo from-the-job > /root/job.txt")
        pod = server_pod(await first_node(cluster), container, pulled)
        request = CommitRequest(pod=pod, container="notebook", repository="crater/alice/viajob", tag="v1",
                                max_bytes=10 * 1024 * 1024, labels={"io.crater.owner": "alice"})
        reporter = Recorder()
        result = await asyncio.wait_for(backend_for(registry, node).commit(request, reporter), 180)
    finally:
        node.remove(container)
    assert reporter.phases() == ["committing", "pushing"]
    assert any(kind == "progress" and value == 1.0 for kind, value in reporter.events)
    assert any(kind == "log" and "layer sha256:" in str(value) for kind, value in reporter.events)
    manifest, digest, _ = await push_client.get_manifest("crater/alice/viajob", "v1")
    assert digest == result.digest and result.base == pulled
    assert manifest["layers"][-1]["size"] == result.layer_size
    await no_commit_jobs_left(cluster)

    node.pull(f"{registry.host}/crater/alice/viajob:v1", PULL_USER, registry.credentials()[PULL_USER])
    node.run(f"{registry.host}/crater/alice/viajob:v1", "srv-job-back", "/bin/sleep", "3600")
    try:
        assert node.exec("srv-job-back", "/bin/cat", "/root/job.txt").stdout == "from-the-job\n"
    finally:
        node.remove("srv-job-back")


async def test_backend_maps_the_size_cap_and_a_refused_push(cluster, node, pulled, registry, tmp_path,  # noqa: F811
                                                            push_client):
    container = server(node, pulled, "srv-job-big", tmp_path / "home")
    try:
        node.exec(container, "/bin/dd", "if=/dev/urandom", "of=/big", "bs=1024", "count=300")
        pod = server_pod(await first_node(cluster), container, pulled)
        request = CommitRequest(pod=pod, container="notebook", repository="crater/alice/bigjob", tag="v1",
                                max_bytes=100 * 1024, labels={"io.crater.owner": "alice"})
        with pytest.raises(CommitFailed) as e:
            await asyncio.wait_for(backend_for(registry, node).commit(request, Recorder()), 180)
        assert e.value.reason == "too_large" and "102400" in e.value.message

        request = CommitRequest(pod=pod, container="notebook", repository="crater/alice/denied", tag="v1",
                                max_bytes=None, labels={"io.crater.owner": "alice"})
        await push_secret(cluster, registry, password="wrong")
        try:
            with pytest.raises(CommitFailed) as e:
                await asyncio.wait_for(backend_for(registry, node).commit(request, Recorder()), 180)
        finally:
            await push_secret(cluster, registry)
        assert e.value.reason == "registry_refused" and "401" in e.value.message
    finally:
        node.remove(container)
    assert await push_client.tags("crater/alice/bigjob") == []
    await no_commit_jobs_left(cluster)


async def test_a_stopped_server_is_refused_before_any_job(cluster, registry, node):  # noqa: F811
    pod = server_pod("cpu-0", "gone", "busybox")
    pod["status"]["containerStatuses"][0]["state"] = {"terminated": {"exitCode": 0}}
    request = CommitRequest(pod=pod, container="notebook", repository="crater/alice/x", tag="v1",
                            max_bytes=None)
    with pytest.raises(CommitFailed) as e:
        await backend_for(registry, node).commit(request, Recorder())
    assert e.value.reason == "server_stopped"
    assert os.path.exists(node.socket)
