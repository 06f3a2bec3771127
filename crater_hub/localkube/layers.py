"""OCI layers from and into overlay directories: what a container runtime's snapshotter does.

``pack``: a pod's overlay upper directory (its writes outside volumes) becomes a gzip'd OCI layer
tar. Overlay marks a deleted file with a 0:0 character device and a directory whose lower
contents are hidden with the ``trusted.overlay.opaque`` xattr; the OCI layer format says the same
with ``.wh.<name>`` and ``.wh..wh..opq`` entries. Paths the runtime itself put there (mount
points of volumes, /etc/hosts and friends) are left out, as a runtime leaves out its mounts.

``unpack``: the reverse, into a directory that becomes one of a pod's overlay lower directories.

Run as a process (``python -m crater_hub.localkube.layers pack UPPER OUT``, used by the hub's
localkube commit backend) so that tarring gigabytes never runs on an event loop; standard
library only. The answer is one JSON line: digest, size, diff_id (the uncompressed tar's digest).
"""

import argparse
import gzip
import hashlib
import json
import os
import stat
import sys
import tarfile

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
TOO_LARGE = 3  # pack's exit status when the changes exceed --max-bytes


class _HashingWriter:
    """A file-like sink that hashes and counts what passes through to ``target``."""

    def __init__(self, target):
        self.target, self.hash, self.size = target, hashlib.sha256(), 0

    def write(self, data):
        self.hash.update(data)
        self.size += len(data)
        return self.target.write(data)

    def flush(self):
        self.target.flush()


def _excluded(rel, exclude):
    return any(rel == e or rel.startswith(e + "/") for e in exclude)


def _is_whiteout(st):
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path):
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def walk(upper, exclude=()):
    """``(relative path, stat)`` of every entry of ``upper``, parents first, excluded ones skipped."""
    exclude = [e.strip("/") for e in exclude if e.strip("/")]
    for root, dirs, files in os.walk(upper):
        dirs.sort()
        rel_root = os.path.relpath(root, upper)
        rel_root = "" if rel_root == "." else rel_root
        kept = []
        for name in dirs:
            rel = os.path.join(rel_root, name)
            if _excluded(rel, exclude):
                continue
            st = os.lstat(os.path.join(root, name))
            yield rel, st
            if not stat.S_ISLNK(st.st_mode):
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            rel = os.path.join(rel_root, name)
            if not _excluded(rel, exclude):
                yield rel, os.lstat(os.path.join(root, name))


def changes_size(upper, exclude=()):
    """Bytes of regular files among the changes (what the size cap is about)."""
    return sum(st.st_size for _, st in walk(upper, exclude) if stat.S_ISREG(st.st_mode))


def pack(upper, out, exclude=(), compresslevel=3):
    """Write the OCI layer of ``upper`` to ``out``; ``{digest, size, diff_id, files}``."""
    files = 0
    with open(out, "wb") as raw:
        compressed = _HashingWriter(raw)
        with gzip.GzipFile(fileobj=compressed, mode="wb", compresslevel=compresslevel, mtime=0) as gz:
            plain = _HashingWriter(gz)
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for rel, st in walk(upper, exclude):
                    path = os.path.join(upper, rel)
                    if _is_whiteout(st):
                        info = tarfile.TarInfo(os.path.join(os.path.dirname(rel), WHITEOUT + os.path.basename(rel)))
                        info.mtime = int(st.st_mtime)
                        tar.addfile(info)
                        continue
                    if stat.S_ISSOCK(st.st_mode):
                        continue  # sockets are not part of images
                    tar.add(path, arcname=rel, recursive=False)
                    files += 1
                    if stat.S_ISDIR(st.st_mode) and _opaque(path):
                        info = tarfile.TarInfo(os.path.join(rel, OPAQUE))
                        info.mtime = int(st.st_mtime)
                        tar.addfile(info)
    return {"digest": f"sha256:{compressed.hash.hexdigest()}", "size": compressed.size,
            "diff_id": f"sha256:{plain.hash.hexdigest()}", "uncompressed_size": plain.size, "files": files}


def unpack(layer, dest):
    """Extract the gzip'd OCI layer ``layer`` into ``dest`` as an overlay lower directory:
    ``.wh.`` entries become whiteout devices, ``.wh..wh..opq`` the opaque xattr."""
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(layer, mode="r:*") as tar:
        for member in tar:
            name = os.path.normpath(member.name.lstrip("/"))
            if name.startswith(".."):
                raise ValueError(f"layer entry {member.name!r} points outside the image")
            base, parent = os.path.basename(name), os.path.dirname(name)
            if base == OPAQUE:
                target = os.path.join(dest, parent)
                os.makedirs(target, exist_ok=True)
                os.setxattr(target, OPAQUE_XATTR, b"y")
            elif base.startswith(WHITEOUT):
                target = os.path.join(dest, parent, base[len(WHITEOUT):])
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if os.path.lexists(target):
                    os.remove(target)
                os.mknod(target, 0o600 | stat.S_IFCHR, os.makedev(0, 0))
            else:
                tar.extract(member, dest, numeric_owner=True, filter="tar")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m crater_hub.localkube.layers")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="an overlay upper directory into a gzip'd OCI layer")
    p.add_argument("upper")
    p.add_argument("out")
    p.add_argument("--exclude", action="append", default=[], help="a path (and what is below) to leave out")
    p.add_argument("--max-bytes", type=int, default=0, help="refuse (exit 3) when the changes are larger")
    u = sub.add_parser("unpack", help="a gzip'd OCI layer into an overlay lower directory")
    u.add_argument("layer")
    u.add_argument("dest")
    args = parser.parse_args(argv)
    if args.command == "unpack":
        unpack(args.layer, args.dest)
        return 0
    if args.max_bytes:
        size = changes_size(args.upper, args.exclude)
        if size > args.max_bytes:
            print(json.dumps({"error": "too_large", "size": size, "limit": args.max_bytes}))
            return TOO_LARGE
    print(json.dumps(pack(args.upper, args.out, args.exclude)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
