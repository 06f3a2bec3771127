"""The embedded default's commit engine: a localkube pod's overlay upper directory as a layer.

On localkube a pod's writes outside its volumes land in its overlay upper directory on this
machine (``<localkube state>/pods/<pod>/upper``, see ``crater_hub.localkube.holder``). Committing
is: tar that directory into an OCI layer (whiteouts for deletions) in a separate process, so the
hub's loop never tars, then push the layer, a config recording the base image in the
``io.crater.base-image`` label, and a manifest. The base is an image-table entry (localkube never
pulls those); when the server runs an image of our registry (a commit of a commit), its layers
come first and its recorded base is kept, so layers stack. localkube pulls such images back.
"""

import asyncio
import json
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from traitlets import Unicode

from ...localkube.layers import TOO_LARGE
from ...localkube.pull import BASE_LABEL
from ...localkube.sandbox import sandbox_dir
from ..registry import (
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    RegistryClient,
    RegistryError,
    split_image,
)
from .base import CommitBackend, CommitFailed, CommitResult, container_id, human_size

#: paths a runtime (not the user) puts into the pod's root; never part of the image
RUNTIME_PATHS = ("/proc", "/sys", "/dev", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf",
                 "/var/run/secrets/kubernetes.io")


def excluded_paths(pod):
    """Every volume's mount path (the home volume, datasets, secrets) and the runtime's files."""
    containers = pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
    return sorted({*RUNTIME_PATHS, *(m["mountPath"] for c in containers for m in c.get("volumeMounts", []))})


class LocalkubeCommitBackend(CommitBackend):
    state_dir = Unicode(
        "", config=True,
        help="""localkube's state directory (where its pods' upper directories are); default: the
        directory of $KUBECONFIG, where localkube writes its kubeconfig.""")

    def _state_dir(self):
        if self.state_dir:
            return Path(self.state_dir)
        return Path(os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or ".").parent

    def client(self):
        s = self.settings
        return RegistryClient(s.registry_url, s.push_username, s.push_password)

    async def commit(self, request, reporter):
        pod = request.pod
        if container_id(pod, request.container) is None:
            raise CommitFailed("server_stopped", "the server stopped before it could be committed")
        upper = sandbox_dir(self._state_dir(), pod) / "upper"
        if not upper.is_dir():
            raise CommitFailed("runtime_error", "this server has no writable layer to commit: localkube runs "
                               "it without its own root filesystem (loopback mode, without root)")
        await reporter.phase("committing")
        image = next(c["image"] for c in pod["spec"]["containers"] if c["name"] == request.container)
        client = self.client()
        base, parent_layers, parent_diff_ids = await self._parent(client, image, request.repository)
        work = Path(tempfile.mkdtemp(prefix="crater-commit-"))
        try:
            layer_file = work / "layer.tar.gz"
            args = [sys.executable, "-m", "crater_hub.localkube.layers", "pack", str(upper), str(layer_file)]
            for path in excluded_paths(pod):
                args += ["--exclude", path]
            if request.max_bytes is not None:
                args += ["--max-bytes", str(request.max_bytes)]
            reporter.log(f"taking the server's changes outside its volumes ({', '.join(excluded_paths(pod))} left out)")
            proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            if proc.returncode == TOO_LARGE:
                info = json.loads(out)
                raise CommitFailed("too_large", f"the server's changes are {human_size(info['size'])}, over the "
                                   f"{human_size(info['limit'])} limit per commit: remove files outside the "
                                   "home (or move them into it) and save again")
            if proc.returncode:
                if not upper.is_dir():  # the pod went away while its layer was being taken
                    raise CommitFailed("server_stopped", "the server stopped during the commit; start it and save again")
                raise CommitFailed("runtime_error", f"taking the layer failed: {err.decode(errors='replace')[-500:]}")
            layer = json.loads(out)
            reporter.log(f"layer {layer['digest']}: {layer['files']} entries, {layer['size']} bytes compressed")
            await reporter.phase("pushing")
            await client.push_blob_file(request.repository, layer_file, layer["digest"], layer["size"],
                                        progress=lambda sent: reporter.progress(sent / max(layer["size"], 1)))
            config = {
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
                "architecture": "amd64", "os": "linux",
                "config": {"Labels": {**request.labels, BASE_LABEL: base}},
                "rootfs": {"type": "layers", "diff_ids": [*parent_diff_ids, layer["diff_id"]]},
                "history": [{"created_by": f"crater commit of {pod['metadata']['name']}"}],
            }
            config_bytes = json.dumps(config, separators=(",", ":")).encode()
            config_digest = await client.push_blob_bytes(request.repository, config_bytes)
            layers = [*parent_layers, {"mediaType": OCI_LAYER_GZIP, "digest": layer["digest"], "size": layer["size"]}]
            manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
                        "layers": layers}
            digest = await client.put_manifest(request.repository, request.tag, manifest)
            reporter.log(f"pushed {self.settings.host}/{request.repository}:{request.tag}@{digest}")
        except RegistryError as e:
            raise CommitFailed("registry_refused", f"the registry refused the push: {e.message}") from None
        finally:
            for f in work.iterdir():
                f.unlink()
            work.rmdir()
        return CommitResult(digest, sum(x["size"] for x in layers) + len(config_bytes), layer["size"], base)

    async def _parent(self, client, image, repository):
        """``(base, layers, diff_ids)`` the new image grows from: an image-table entry (no layers)
        or an image of our registry, whose layers are mounted into ``repository``."""
        try:
            host, parent_repo, ref = split_image(image)
        except ValueError:
            return image, [], []
        if host != self.settings.host:
            return image, [], []
        try:
            manifest, _, _ = await client.get_manifest(parent_repo, ref)
            config = json.loads(await client.get_blob_bytes(parent_repo, manifest["config"]["digest"]))
            if parent_repo != repository:
                for layer in manifest["layers"]:
                    if not await client.mount_blob(repository, layer["digest"], parent_repo):
                        raise CommitFailed("registry_refused", f"the registry would not share layer "
                                           f"{layer['digest']} of {image} with {repository}")
        except RegistryError as e:
            raise CommitFailed("registry_refused", f"the server's image {image}: {e.message}") from None
        base = ((config.get("config") or {}).get("Labels") or {}).get(BASE_LABEL, image)
        return base, manifest["layers"], (config.get("rootfs") or {}).get("diff_ids") or []
