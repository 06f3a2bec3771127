"""An overlay upper directory as an OCI layer and back: files, whiteouts, opaque directories,
the runtime's paths left out, the size cap (``crater_hub.localkube.layers``)."""

import gzip
import hashlib
import json
import os
import stat
import subprocess
import sys
import tarfile

import pytest

from crater_hub.localkube import layers

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="whiteout devices and trusted.* xattrs need root")


@needs_root
def test_pack_then_unpack_keeps_files_deletions_and_opaque_directories(tmp_path):
    upper = tmp_path / "upper"
    (upper / "opt/tool").mkdir(parents=True)
    (upper / "opt/tool/run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(upper / "opt/tool/run.sh", 0o755)
    os.symlink("/opt/tool/run.sh", upper / "opt/run")
    (upper / "etc").mkdir()
    os.mknod(upper / "etc/motd", 0o600 | stat.S_IFCHR, os.makedev(0, 0))  # overlay's "deleted"
    (upper / "var/cache").mkdir(parents=True)
    os.setxattr(upper / "var/cache", layers.OPAQUE_XATTR, b"y")  # overlay's "replaced whole"
    (upper / "home/jovyan").mkdir(parents=True)
    (upper / "home/jovyan/notes.txt").write_text("in the home volume's mount point")
    (upper / "etc/hosts").write_text("runtime's")

    out = tmp_path / "layer.tar.gz"
    info = layers.pack(upper, out, exclude=["/home/jovyan", "/etc/hosts"])
    data = out.read_bytes()
    assert info["digest"] == "sha256:" + hashlib.sha256(data).hexdigest() and info["size"] == len(data)
    assert info["diff_id"] == "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest()
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
    assert {"opt/tool/run.sh", "opt/run", "etc/.wh.motd", "var/cache/.wh..wh..opq"} <= names
    assert not any(n.startswith("home/jovyan") or n == "etc/hosts" for n in names)

    lower = tmp_path / "lower"
    layers.unpack(out, lower)
    assert (lower / "opt/tool/run.sh").read_text().startswith("#!/bin/sh")
    assert os.stat(lower / "opt/tool/run.sh").st_mode & 0o111
    assert os.readlink(lower / "opt/run") == "/opt/tool/run.sh"
    st = os.lstat(lower / "etc/motd")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(lower / "var/cache", layers.OPAQUE_XATTR) == b"y"


def test_a_layer_entry_outside_the_image_is_refused(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../outside")
        tar.addfile(info)
    with pytest.raises(ValueError, match="outside"):
        layers.unpack(evil, tmp_path / "dest")


def test_the_size_cap_stops_before_tarring_with_both_sizes(tmp_path):
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "big").write_bytes(b"x" * 3000)
    done = subprocess.run([sys.executable, "-m", "crater_hub.localkube.layers", "pack", str(upper),
                           str(tmp_path / "out.tar.gz"), "--max-bytes", "2048"], capture_output=True)
    assert done.returncode == layers.TOO_LARGE
    assert json.loads(done.stdout) == {"error": "too_large", "size": 3000, "limit": 2048}
    assert not (tmp_path / "out.tar.gz").exists()
