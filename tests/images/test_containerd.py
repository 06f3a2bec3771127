"""The containerd commit program for real: Debian's containerd + runc (as root) and the registry.

A base image built here (static busybox) is pushed to the real registry and pulled by containerd
with the read-only account, as a node pulls a server's image; a container runs from it with a
"home volume" bind-mounted; a user's changes are made inside it; then the program the commit Job
runs commits and pushes it, and the image is pulled back and run to find the changes.
"""

import asyncio
import base64
import json
import os
import subprocess
import sys

import pytest

from crater_hub.images.containerd_commit import EXIT
from crater_hub.images.local_registry import PULL_USER, PUSH_USER

from .busybox_image import push_busybox
from .containerd_node import ContainerdNode

BASE_REPO = "crater/base/busybox"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    runtime = ContainerdNode(tmp_path_factory.mktemp("containerd")).start()
    yield runtime
    runtime.stop()


@pytest.fixture(scope="module")
def base_image(registry):
    """The base image in the registry (pulled onto the node by ``pulled``)."""
    from crater_hub.images.registry import RegistryClient

    async def push():
        client = RegistryClient(registry.url, PUSH_USER, registry.credentials()[PUSH_USER])
        await push_busybox(client, BASE_REPO, "base")

    asyncio.run(push())
    return f"{registry.host}/{BASE_REPO}:base"


@pytest.fixture
def pulled(node, base_image, registry):
    node.pull(base_image, PULL_USER, registry.credentials()[PULL_USER])
    return base_image


def auth_file(path, registry, password=None):
    """The push Secret as the Job mounts it: a docker config JSON, readable by root only."""
    raw = f"{PUSH_USER}:{password or registry.credentials()[PUSH_USER]}".encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"auths": {registry.host: {"auth": base64.b64encode(raw).decode()}}}, f)
    return str(path)


def commit(node, registry, container, repository, tag, auth, *extra):
    """Run the Job's program; ``(exit status, progress events)``."""
    done = subprocess.run(
        [sys.executable, "-m", "crater_hub.images.containerd_commit", "--address", node.socket,
         "--container-id", f"containerd://{container}", "--registry-url", registry.url,
         "--repository", repository, "--tag", tag, "--auth-file", auth, *extra],
        capture_output=True, text=True, timeout=300)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    return done.returncode, events, done.stderr


def one(events, key):
    found = [e[key] for e in events if key in e]
    assert len(found) == 1, (key, events)
    return found[0]


def server(node, image, name, home):
    """A 'server' container: the image, a home volume at /home/jovyan, sleeping."""
    home.mkdir(exist_ok=True)
    return node.run(image, name, "/bin/sleep", "3600", mounts=[(home, "/home/jovyan")])


async def test_commit_push_pull_back_and_the_files_are_there(node, pulled, registry, tmp_path, push_client):
    container = server(node, pulled, "srv-alice", tmp_path / "home")
    node.exec(container, "/bin/sh", "-c", "mkdir -p /opt/tools && echo installed-by-alice > /opt/tools/made.txt"
              " && rm /bin/true && echo in-home > /home/jovyan/notes.txt")
    assert (tmp_path / "home" / "notes.txt").read_text() == "in-home\n"  # the volume took it

    status, events, stderr = commit(node, registry, container, "crater/alice/tools", "v1",
                                    auth_file(tmp_path / "auth.json", registry),
                                    "--label", "io.crater.source=alice/srv")
    assert status == 0, (events, stderr)
    phases = [e["phase"] for e in events if "phase" in e]
    assert phases == ["committing", "pushing"]
    sizes = one(events, "sizes")
    result = one(events, "result")
    assert result["layer_size"] == sizes["layer"] and 0 < sizes["layer"] < 64 * 1024
    assert result["reference"] == f"{registry.host}/crater/alice/tools:v1"
    assert result["base"] == pulled
    # the task was resumed after the diff: the server still runs
    assert node.exec(container, "/bin/cat", "/opt/tools/made.txt").stdout == "installed-by-alice\n"

    # the registry has it: tag, manifest (base layer + new layer), config with the history entry
    assert "v1" in await push_client.tags("crater/alice/tools")
    manifest, digest, _ = await push_client.get_manifest("crater/alice/tools", "v1")
    assert digest == result["digest"] and len(manifest["layers"]) == 2
    base_manifest, base_digest, _ = await push_client.get_manifest(BASE_REPO, "base")
    assert manifest["layers"][0] == base_manifest["layers"][0]
    assert manifest["annotations"]["org.opencontainers.image.base.digest"] == base_digest
    config = json.loads(await push_client.get_blob_bytes("crater/alice/tools", manifest["config"]["digest"]))
    assert config["config"]["Entrypoint"] == ["/bin/sh"]  # the base config is kept
    assert config["config"]["Labels"] == {"org.example.base": "busybox", "io.crater.source": "alice/srv"}
    assert len(config["rootfs"]["diff_ids"]) == 2 and len(config["history"]) == 2

    # pulled back onto the node (read-only account) and run: the file is there, the deletion too,
    # the home volume's file is not
    node.pull(result["reference"], PULL_USER, registry.credentials()[PULL_USER])
    node.run(result["reference"], "srv-from-image", "/bin/sleep", "3600")
    try:
        assert node.exec("srv-from-image", "/bin/cat", "/opt/tools/made.txt").stdout == "installed-by-alice\n"
        listing = node.exec("srv-from-image", "/bin/sh", "-c",
                            "ls /bin/true; ls -A /home/jovyan; true", check=False)
        assert "No such file" in listing.stderr and "notes.txt" not in listing.stdout
    finally:
        node.remove("srv-from-image")
        node.remove(container)


async def test_over_the_size_cap_fails_with_both_sizes_and_pushes_nothing(node, pulled, registry, tmp_path,
                                                                          push_client):
    container = server(node, pulled, "srv-big", tmp_path / "home")
    try:
        node.exec(container, "/bin/dd", "if=/dev/zero", "of=/opt-big", "bs=1024", "count=256")
        status, events, _ = commit(node, registry, container, "crater/alice/big", "v1",
                                   auth_file(tmp_path / "auth.json", registry), "--max-bytes", str(100 * 1024))
    finally:
        node.remove(container)
    assert status == EXIT["too_large"]
    error = one(events, "error")
    assert error["reason"] == "too_large" and error["limit"] == 100 * 1024
    assert error["size"] > 256 * 1024 and 0 < error["compressed"] < error["size"]
    assert str(error["size"]) in error["message"] and "102400" in error["message"]
    assert [e["phase"] for e in events if "phase" in e] == ["committing"]
    assert await push_client.tags("crater/alice/big") == []


def test_a_container_that_is_gone_is_a_stopped_server(node, registry, tmp_path):
    status, events, _ = commit(node, registry, "0123456789abcdef", "crater/alice/gone", "v1",
                               auth_file(tmp_path / "auth.json", registry))
    assert status == EXIT["server_stopped"]
    error = one(events, "error")
    assert error["reason"] == "server_stopped" and "start the server again" in error["message"]


async def test_wrong_push_credentials_fail_with_the_registrys_reason(node, pulled, registry, tmp_path, push_client):
    container = server(node, pulled, "srv-denied", tmp_path / "home")
    try:
        node.exec(container, "/bin/sh", "-c", "echo x > /root/x")
        status, events, _ = commit(node, registry, container, "crater/alice/denied", "v1",
                                   auth_file(tmp_path / "auth.json", registry, password="wrong"))
        # the server still runs after a failed commit
        assert node.exec(container, "/bin/cat", "/root/x").stdout == "x\n"
    finally:
        node.remove(container)
    assert status == EXIT["registry_refused"]
    error = one(events, "error")
    assert error["reason"] == "registry_refused" and "401" in error["message"]
    assert "credentials" in error["message"]
    assert await push_client.tags("crater/alice/denied") == []
