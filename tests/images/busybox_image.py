"""A tiny OCI base image built here from Debian's static busybox (no network): one layer with
``/bin/busybox`` and its applets as symlinks, a config whose entrypoint is ``/bin/sh``.

The containerd tests push it to the real registry and pull it with ``ctr``, as a cluster's node
would pull a user's server image.
"""

import gzip
import hashlib
import io
import json
import shutil
import tarfile

from crater_hub.images.registry import OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "cat", "ls", "mkdir", "rm", "sleep", "dd", "echo", "head", "true", "sync")


def busybox_binary():
    """Debian's busybox-static, or an AssertionError naming the package (never a skip)."""
    path = shutil.which("busybox")
    assert path, "busybox is missing: install Debian's busybox-static (./dev test does as root)"
    with open(path, "rb") as f:
        static = b"ld-linux" not in f.read(4096)  # a dynamic one names its loader near the start
    assert static, f"{path} is not statically linked: install Debian's busybox-static"
    return path


def _layer_bytes():
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("bin", "tmp", "etc", "proc", "sys", "dev", "root"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox_binary(), arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    plain = raw.getvalue()
    return plain, gzip.compress(plain, mtime=0)


def _digest(data):
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


async def push_busybox(client, repository, tag="base"):
    """Push the image to ``repository:tag``; its manifest digest."""
    plain, layer = _layer_bytes()
    await client.push_blob_bytes(repository, layer)
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/sh"], "Env": ["PATH=/bin"], "WorkingDir": "/",
                   "Labels": {"org.example.base": "busybox"}},
        "rootfs": {"type": "layers", "diff_ids": [_digest(plain)]},
        "history": [{"created_by": "tests/images/busybox_image.py"}],
    }
    config_bytes = json.dumps(config).encode()
    await client.push_blob_bytes(repository, config_bytes)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": _digest(config_bytes), "size": len(config_bytes)},
                "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": _digest(layer), "size": len(layer)}]}
    return await client.put_manifest(repository, tag, manifest)
