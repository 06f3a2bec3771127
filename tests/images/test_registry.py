"""The registry client against the real distribution registry: what the commit engine relies on."""

import hashlib
import json
import os

import pytest

from crater_hub.images.local_registry import PULL_USER
from crater_hub.images.registry import (
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    RegistryClient,
    RegistryError,
    sha256_file,
)


async def test_wrong_password_is_refused_with_the_registrys_reason(registry):
    with pytest.raises(RegistryError) as e:
        await RegistryClient(registry.url, PULL_USER, "wrong").ping()
    assert e.value.status == 401 and "UNAUTHORIZED" in e.value.message


async def test_push_chunked_and_monolithic_then_read_back_list_and_delete(registry, push_client, tmp_path):
    repo = "crater/alice/tools"
    layer = tmp_path / "layer.tar.gz"
    layer.write_bytes(os.urandom(200 * 1024))  # over the client's 64 KiB chunk: PATCH chunks
    digest, size = sha256_file(layer)
    sent = []
    assert await push_client.push_blob_file(repo, layer, digest, size, progress=sent.append) == digest
    assert sent[-1] == size and len(sent) == 4  # 64+64+64+8 KiB
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    config_digest = await push_client.push_blob_bytes(repo, config)  # monolithic
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": size}]}
    pushed = await push_client.put_manifest(repo, "v1", manifest)

    assert await push_client.tags(repo) == ["v1"]
    assert repo in await push_client.catalog()
    got, got_digest, media_type = await push_client.get_manifest(repo, "v1")
    assert got_digest == pushed and media_type == OCI_MANIFEST and got["layers"][0]["digest"] == digest
    assert (await push_client.head_manifest(repo, "v1"))[0] == pushed
    out = tmp_path / "back"
    await push_client.get_blob(repo, digest, out)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest.split(":")[1]
    assert await push_client.get_blob_bytes(repo, config_digest) == config

    # another repository mounts the layer instead of uploading it again
    assert await push_client.mount_blob("crater/bob/tools", digest, repo)
    assert await push_client.has_blob("crater/bob/tools", digest)

    assert await push_client.delete_manifest(repo, pushed)
    assert await push_client.head_manifest(repo, "v1") is None
    assert await push_client.tags(repo) == []


async def test_a_manifest_naming_a_missing_blob_is_refused_with_the_registrys_words(push_client):
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + "0" * 64, "size": 2},
                "layers": []}
    with pytest.raises(RegistryError) as e:
        await push_client.put_manifest("crater/alice/broken", "v1", manifest)
    assert e.value.status == 400 and "MANIFEST_BLOB_UNKNOWN" in e.value.message
