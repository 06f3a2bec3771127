"""The program a commit Job runs on the server's node: commit one containerd container and push it.

``ctr`` (containerd's own client, talking to the node's socket) has no ``commit``; containerd's
diff service does the part that matters. The steps:

1. ``ctr containers info <id>``: the container's image, snapshotter and snapshot key. The ID comes
   from ``pod.status.containerStatuses[].containerID`` (``containerd://`` stripped), never from
   matching names.
2. The base image's manifest and config from the node's content store (``ctr images ls``,
   ``ctr content get``); of an index, the platform manifest whose layers are the container's
   snapshot parent (its chain ID), so a tag moved since the container started is never mistaken
   for its base.
3. ``ctr snapshots diff <key>`` (the task paused meanwhile, as ``nerdctl commit`` does): the
   container's writable layer as a gzip'd OCI layer, streamed here into a file while its digest,
   its size and its uncompressed digest (the config's diff_id) are computed. Volumes (the home
   volume, datasets, secrets) are bind mounts, never part of the snapshot: never in the image.
4. The size cap, now that both sizes are known.
5. Push (:class:`~crater_hub.images.registry.RegistryClient`): the base layers (already there,
   mounted from the base's repository of the same registry, or uploaded from the node's content
   store), the new layer, a config (the base's, with the new diff_id and a history entry) and an
   OCI manifest under the tag.

Usage: the commit Job runs ``crater-commit`` (``python -m crater_hub.images.containerd_commit``)
with its settings in the environment (``CRATER_CONTAINER_ID``, ``CRATER_TARGET``,
``CONTAINERD_ADDRESS``, ``DOCKER_CONFIG``...: see ``--help``); credentials come only from the
mounted Secret file (``$DOCKER_CONFIG/config.json``), never from arguments or the environment,
which the pod spec shows. By hand::

    crater-commit --address /run/containerd/containerd.sock --container-id containerd://0123... \\
        --target harbor.example.org/crater/alice/torch:v1 --auth-file ~/.docker/config.json

It needs Python 3.10+, this package (tornado for the registry client) and the ``ctr`` binary
(Debian's ``containerd`` package, or the one of the node's containerd release).

Its stdout is one JSON object per line, which the hub relays from the Job's log:
``{"phase": "committing"|"pushing"}``, ``{"log": text}``, ``{"progress": 0..1}`` (of the
push), ``{"sizes": {...}}``, then ``{"result": {...}}`` or ``{"error": {"reason", "message"}}``.
The exit status says the same for whoever reads only that (:data:`EXIT`).
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zlib
from datetime import datetime, timezone
from urllib.parse import urlsplit

from .registry import (
    DOCKER_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    RegistryClient,
    RegistryError,
    split_image,
)

#: exit status of each failure reason (the reasons of ``crater_hub.images.backends.base``)
EXIT = {"too_large": 3, "server_stopped": 4, "registry_refused": 5, "runtime_error": 6}
REASON_OF_EXIT = {code: reason for reason, code in EXIT.items()}

#: Docker media types of layers and their OCI names (the new manifest is an OCI manifest)
OCI_LAYER_TYPES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": OCI_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}
FOREIGN = ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
           "application/vnd.oci.image.layer.nondistributable.v1.tar")
BLOCK = 1 << 20


class Failed(Exception):
    """The commit cannot go on: ``reason`` (a key of :data:`EXIT`) and what a user can do."""

    def __init__(self, reason, message, **details):
        super().__init__(message)
        self.reason, self.message, self.details = reason, message, details


def emit(**event):
    """One progress line for the hub."""
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def chain_id(diff_ids):
    """The identity of a stack of layers, as containerd names the snapshot of that stack."""
    chain = None
    for diff_id in diff_ids:
        chain = diff_id if chain is None else "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
    return chain


def credentials(path, host):
    """``(username, password)`` for ``host`` from a docker config file (the ``.dockerconfigjson``
    key of a kubernetes.io/dockerconfigjson Secret, or a ``config.json``)."""
    if not path:
        return "", ""
    try:
        with open(path) as f:
            auths = json.load(f).get("auths") or {}
    except (OSError, ValueError) as e:
        raise Failed("runtime_error", f"cannot read the push credentials {path}: {e}") from None
    for key, entry in auths.items():
        if key.split("://", 1)[-1].rstrip("/") != host:
            continue
        if entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return user, password
        return entry.get("username", ""), entry.get("password", "")
    raise Failed("runtime_error", f"the push credentials {path} have no entry for the registry {host}")


class Ctr:
    """``ctr`` against one socket and namespace; every call's failure becomes :class:`Failed`."""

    def __init__(self, address, namespace, binary="ctr"):
        self.base = [binary, "--address", address, "--namespace", namespace]
        self.address = address

    def _args(self, args):
        return [*self.base, *args]

    def run(self, *args, what):
        try:
            done = subprocess.run(self._args(args), capture_output=True, timeout=300)
        except FileNotFoundError:
            raise Failed("runtime_error", f"{self.base[0]!r} is not installed in the commit Job's image") from None
        if done.returncode:
            err = done.stderr.decode(errors="replace").strip()
            if "not found" in err and what.startswith("container"):
                raise Failed("server_stopped", f"the server's container is gone ({err}): it stopped or "
                             "restarted; start the server again and save it then")
            if "connection refused" in err or ("no such file" in err.lower() and "sock" in err):
                raise Failed("runtime_error", f"containerd does not answer on {self.address}: {err}")
            raise Failed("runtime_error", f"{what}: {err or 'ctr exited with ' + str(done.returncode)}")
        return done.stdout

    def json(self, *args, what):
        return json.loads(self.run(*args, what=what))

    def blob(self, digest, what):
        return self.run("content", "get", digest, what=what)

    def blob_to_file(self, digest, path, what):
        with open(path, "wb") as f:
            done = subprocess.run(self._args(["content", "get", digest]), stdout=f, stderr=subprocess.PIPE,
                                  timeout=3600)
        if done.returncode:
            raise Failed("runtime_error", f"{what}: {done.stderr.decode(errors='replace').strip()}")

    def image_target(self, name):
        """``(media type, digest)`` of the image record ``name`` on the node."""
        out = self.run("images", "ls", f"name=={name}", what=f"image {name}").decode()
        for line in out.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3 and fields[0] == name:
                return fields[1], fields[2]
        raise Failed("runtime_error", f"the container's image {name} is not on the node any more "
                     "(removed by the node's image garbage collection?): restart the server and save it then")


class LayerFile:
    """Where ``ctr snapshots diff`` goes: a file, with the digest and size of what was written and
    the digest and size of its gunzipped content (the diff_id)."""

    def __init__(self, path):
        self.path = path
        self.compressed, self.plain = hashlib.sha256(), hashlib.sha256()
        self.size = self.plain_size = 0
        self._gunzip = zlib.decompressobj(wbits=31)

    def take(self, stream):
        with open(self.path, "wb") as out:
            while block := stream.read(BLOCK):
                out.write(block)
                self.compressed.update(block)
                self.size += len(block)
                self._plain(self._gunzip.decompress(block))
        self._plain(self._gunzip.flush())

    def _plain(self, data):
        self.plain.update(data)
        self.plain_size += len(data)

    @property
    def digest(self):
        return f"sha256:{self.compressed.hexdigest()}"

    @property
    def diff_id(self):
        return f"sha256:{self.plain.hexdigest()}"


class Commit:
    """One commit: the steps of the module's docstring, in order."""

    def __init__(self, args):
        self.args = args
        self.ctr = Ctr(args.address, args.namespace, args.ctr)
        self.container = args.container_id.split("://", 1)[-1]
        self.registry_host = urlsplit(args.registry_url).netloc

    # -- committing ------------------------------------------------------------------------------

    def inspect(self):
        info = self.ctr.json("containers", "info", self.container, what=f"container {self.container}")
        snapshotter, key = info.get("Snapshotter"), info.get("SnapshotKey")
        if not key or not info.get("Image"):
            raise Failed("runtime_error", f"container {self.container} has no image snapshot to commit")
        self.image, self.snapshotter, self.snapshot_key = info["Image"], snapshotter, key
        snap = self.ctr.json("snapshots", "--snapshotter", snapshotter, "info", key,
                             what=f"container {self.container}'s snapshot")
        self.parent_chain = snap.get("Parent")
        self.manifest, self.manifest_digest, self.config = self._base()

    def _base(self):
        """The platform manifest (and its config) the container's snapshot grew from."""
        media_type, digest = self.ctr.image_target(self.image)
        document = json.loads(self.ctr.blob(digest, f"manifest of {self.image}"))
        if media_type in (OCI_INDEX, DOCKER_LIST) or "manifests" in document:
            candidates = [m["digest"] for m in document["manifests"]
                          if (m.get("platform") or {}).get("os", "linux") == "linux"]
        else:
            candidates = [digest]
        for candidate in candidates:
            try:
                manifest = document if candidate == digest else json.loads(
                    self.ctr.blob(candidate, f"manifest {candidate}"))
                config = json.loads(self.ctr.blob(manifest["config"]["digest"], f"config of {self.image}"))
            except Failed:
                continue  # another platform's manifest, not on this node
            if chain_id((config.get("rootfs") or {}).get("diff_ids") or []) == self.parent_chain:
                return manifest, candidate, config
        raise Failed("runtime_error", f"none of the node's manifests of {self.image} has the layers the "
                     "container started from (the tag moved since?): restart the server and save it then")

    def diff(self, layer):
        """Take the writable layer into ``layer`` (a :class:`LayerFile`), the task paused."""
        paused = False
        if self.args.pause:
            self.ctr.run("tasks", "pause", self.container, what=f"container {self.container}")
            paused = True
        try:
            cmd = self.ctr._args(["snapshots", "--snapshotter", self.snapshotter, "diff", self.snapshot_key])
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            layer.take(proc.stdout)
            err = proc.stderr.read().decode(errors="replace").strip()
            if proc.wait():
                raise Failed("runtime_error", f"taking the container's changes failed: {err}")
        finally:
            if paused:
                self.ctr.run("tasks", "resume", self.container, what=f"container {self.container}")

    # -- pushing ---------------------------------------------------------------------------------

    def new_config(self, layer):
        now = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        config = json.loads(json.dumps(self.config))
        config["created"] = now
        config.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append(layer.diff_id)
        history = config.setdefault("history", [])
        history.append({"created": now, "created_by": self.args.created_by or f"crater commit of {self.container}",
                        "comment": "changes of a running server, committed by crater_hub"})
        inner = config.setdefault("config", {})
        inner["Labels"] = {**(inner.get("Labels") or {}), **dict(self.args.label)}
        return json.dumps(config, separators=(",", ":")).encode()

    async def push(self, layer, work):
        user, password = credentials(self.args.auth_file, self.registry_host)
        client = RegistryClient(self.args.registry_url, user, password)
        repo = self.args.repository
        base_host, base_repo = self._base_location()
        layers = []
        for entry in self.manifest["layers"]:
            media_type = OCI_LAYER_TYPES.get(entry["mediaType"], entry["mediaType"])
            layers.append({**entry, "mediaType": media_type})
            if media_type in FOREIGN or await client.has_blob(repo, entry["digest"]):
                continue
            if base_host == self.registry_host and base_repo != repo and await client.mount_blob(
                    repo, entry["digest"], base_repo):
                continue
            path = os.path.join(work, "base-layer")
            self.ctr.blob_to_file(entry["digest"], path, f"base layer {entry['digest']} of {self.image} "
                                  "(not in the registry and not on the node)")
            emit(log=f"uploading base layer {entry['digest']} ({entry['size']} bytes) from the node")
            await client.push_blob_file(repo, path, entry["digest"], entry["size"])
            os.unlink(path)
        total = max(layer.size, 1)
        await client.push_blob_file(repo, layer.path, layer.digest, layer.size,
                                    progress=lambda sent: emit(progress=round(sent / total, 4)))
        config = self.new_config(layer)
        config_digest = await client.push_blob_bytes(repo, config)
        layers.append({"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size})
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                    "layers": layers,
                    "annotations": {"org.opencontainers.image.base.name": self.image,
                                    "org.opencontainers.image.base.digest": self.manifest_digest}}
        digest = await client.put_manifest(repo, self.args.tag, manifest)
        return {"digest": digest, "size": sum(x["size"] for x in layers) + len(config),
                "layer_size": layer.size, "changes_size": layer.plain_size, "base": self.image,
                "reference": f"{self.registry_host}/{repo}:{self.args.tag}"}

    def _base_location(self):
        try:
            host, repo, _ = split_image(self.image)
        except ValueError:
            return None, None
        return host, repo

    # -- all of it -------------------------------------------------------------------------------

    def run(self):
        emit(phase="committing")
        self.inspect()
        emit(log=f"container {self.container} runs {self.image} ({self.manifest_digest}); "
                 f"taking its changes from snapshot {self.snapshot_key} ({self.snapshotter})")
        with tempfile.TemporaryDirectory(prefix="crater-commit-", dir=self.args.work_dir) as work:
            layer = LayerFile(os.path.join(work, "layer.tar.gz"))
            self.diff(layer)
            emit(sizes={"changes": layer.plain_size, "layer": layer.size})
            limit = self.args.max_bytes
            if limit and layer.plain_size > limit:
                raise Failed("too_large", f"the server's changes are {layer.plain_size} bytes "
                             f"({layer.size} compressed), over the {limit} bytes limit per commit",
                             size=layer.plain_size, compressed=layer.size, limit=limit)
            emit(log=f"layer {layer.digest}: {layer.size} bytes compressed, {layer.plain_size} uncompressed")
            emit(phase="pushing")
            try:
                result = asyncio.run(self.push(layer, work))
            except RegistryError as e:
                hint = (" (the push account's credentials or rights: the commit Secret of the system namespace)"
                        if e.status in (401, 403) else "")
                raise Failed("registry_refused", f"the registry refused the push: {e.message}{hint}") from None
        emit(log=f"pushed {result['reference']}@{result['digest']}")
        emit(result=result)
        return result


def _label(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"a label is KEY=VALUE, got {text!r}")
    return key, value


def parser():
    env = os.environ.get
    docker_config = env("DOCKER_CONFIG")
    p = argparse.ArgumentParser(
        prog="crater-commit",
        description="Commit a containerd container's changes as an image and push it. Every option "
                    "has an environment variable (the commit Job sets them).")
    p.add_argument("--address", default=env("CONTAINERD_ADDRESS", "/run/containerd/containerd.sock"),
                   help="containerd's socket ($CONTAINERD_ADDRESS)")
    p.add_argument("--namespace", default=env("CONTAINERD_NAMESPACE", "k8s.io"),
                   help="containerd namespace, the kubelet's: k8s.io ($CONTAINERD_NAMESPACE)")
    p.add_argument("--container-id", default=env("CRATER_CONTAINER_ID"),
                   help="from pod.status.containerStatuses[].containerID ($CRATER_CONTAINER_ID)")
    p.add_argument("--target", default=env("CRATER_TARGET"),
                   help="host/repository:tag to push ($CRATER_TARGET)")
    p.add_argument("--registry-url", default=env("CRATER_REGISTRY_URL"),
                   help="the registry's API URL, http:// for a plain one ($CRATER_REGISTRY_URL; "
                        "default https://<target's host>)")
    p.add_argument("--repository", help="repository path in the registry (instead of --target)")
    p.add_argument("--tag", help="(instead of --target)")
    p.add_argument("--auth-file", default=os.path.join(docker_config, "config.json") if docker_config else "",
                   help="docker config JSON with the push credentials ($DOCKER_CONFIG/config.json)")
    p.add_argument("--max-bytes", type=int, default=int(env("CRATER_MAX_BYTES") or 0),
                   help="largest uncompressed layer; 0: no cap ($CRATER_MAX_BYTES)")
    p.add_argument("--label", action="append", default=[], type=_label,
                   help="KEY=VALUE added to the image config's labels (and $CRATER_LABELS, a JSON object)")
    p.add_argument("--created-by", default=env("CRATER_CREATED_BY", ""), help="the history entry's created_by")
    p.add_argument("--no-pause", dest="pause", action="store_false", help="do not pause the task during the diff")
    p.add_argument("--work-dir", default=None, help="where the layer is kept until pushed (default: $TMPDIR)")
    p.add_argument("--ctr", default="ctr", help="the ctr binary")
    return p


def parse(argv=None):
    """The options, completed: repository and tag from --target, the registry URL, the labels."""
    p = parser()
    args = p.parse_args(argv)
    method = os.environ.get("CRATER_METHOD", "ctr")
    if method != "ctr":
        p.error(f"CRATER_METHOD={method!r}: this program commits with ctr only")
    if not args.container_id:
        p.error("--container-id (or $CRATER_CONTAINER_ID) is required")
    if args.target:
        host, args.repository, args.tag = split_image(args.target)
        args.registry_url = args.registry_url or f"https://{host}"
        if urlsplit(args.registry_url).netloc != host:
            p.error(f"--registry-url {args.registry_url} is not the target's registry {host}")
    if not (args.repository and args.tag and args.registry_url):
        p.error("--target (or --registry-url, --repository and --tag) is required")
    try:
        labels = json.loads(os.environ.get("CRATER_LABELS") or "{}")
    except ValueError:
        p.error("$CRATER_LABELS is not a JSON object")
    args.label = [*labels.items(), *args.label]
    return args


def main(argv=None):
    args = parse(argv)
    try:
        Commit(args).run()
    except Failed as e:
        emit(error={"reason": e.reason, "message": e.message, **e.details})
        return EXIT[e.reason]
    return 0


if __name__ == "__main__":
    sys.exit(main())
