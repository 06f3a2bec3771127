"""The image table: the stand-in for OCI image configs, since localkube never pulls an image.

Kubernetes builds a container's argv from the pod's command/args *and* the image's entrypoint and
cmd (KubeSpawner, for one, puts the whole command in ``args``), so the kubelet must know each
image's config. ``images.yaml`` next to this file is the default table; ``LocalKube(image_table=)``
points at another one with the same format (documented in that file).
"""

import fnmatch
import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DEFAULT_TABLE = Path(__file__).with_name("images.yaml")


@dataclass(frozen=True)
class Image:
    """One image's config: what ``docker inspect`` would tell a real kubelet."""

    entrypoint: tuple = ()
    cmd: tuple = ()
    home: str = "/root"
    workdir: str = "/"
    env: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    #: {variable: device plugin variable}: set ``variable`` to the pod's assigned device ids too
    visible_devices: dict = field(default_factory=dict)

    def device_aliases(self, device_env, pod_env):
        """What ``visible_devices`` adds for a pod with ``device_env``; the pod's own env wins."""
        return {target: device_env[source] for target, source in self.visible_devices.items()
                if source in device_env and target not in pod_env}

    def environment(self, rootfs):
        """The image's env with its placeholders filled in for a pod whose rootfs is ``rootfs``."""
        values = {
            "{python_bin}": os.path.dirname(sys.executable),
            "{node_bin}": os.path.join(sys.prefix, "node", "node_modules", ".bin"),
            "{rootfs}": str(rootfs),
            "{host_path}": os.environ.get("PATH", os.defpath),
        }
        out = {}
        for key, value in self.env.items():
            value = str(value)
            for placeholder, actual in values.items():
                value = value.replace(placeholder, actual)
            out[key] = value
        return out


def split_reference(image):
    """``(repository, tag)`` of an image reference; a digest is dropped, the tag may be ''."""
    ref = image.split("@", 1)[0]
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1:]
    return ref, ""


def normalize(repository):
    """The fully qualified repository, as Docker reads a short name: ``docker.io/library/x``."""
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return repository
    if not rest:
        return f"docker.io/library/{repository}"
    return f"docker.io/{repository}"


def _aliases(repository):
    """Every spelling of a repository a pattern may be written against."""
    full = normalize(repository)
    names = {repository, full}
    if full.startswith("docker.io/"):
        names.add(full[len("docker.io/"):])
    if full.startswith("docker.io/library/"):
        names.add(full[len("docker.io/library/"):])
    return names


def image_id(image):
    """A stable, digest-shaped imageID for container statuses (there is no real digest)."""
    repository, _ = split_reference(image)
    return f"{normalize(repository)}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


class ImageTable:
    """Ordered (patterns, Image) entries; the first entry whose pattern matches wins."""

    def __init__(self, entries):
        self.entries = entries

    @classmethod
    def load(cls, path=None):
        with open(path or DEFAULT_TABLE) as f:
            doc = yaml.safe_load(f) or {}
        entries = []
        for raw in doc.get("images", []):
            patterns = raw["match"] if isinstance(raw["match"], list) else [raw["match"]]
            image = Image(
                entrypoint=tuple(raw.get("entrypoint") or ()),
                cmd=tuple(raw.get("cmd") or ()),
                home=raw.get("home", "/root"),
                workdir=raw.get("workdir", "/"),
                env={str(k): str(v) for k, v in (raw.get("env") or {}).items()},
                files={str(k): str(v) for k, v in (raw.get("files") or {}).items()},
                visible_devices={str(k): str(v) for k, v in (raw.get("visible_devices") or {}).items()},
            )
            entries.append((tuple(patterns), image))
        return cls(entries)

    def lookup(self, image):
        """The config for an image reference; an image nothing matches has an empty config."""
        repository, tag = split_reference(image)
        names = _aliases(repository)
        tagged = {f"{name}:{tag}" for name in names} if tag else set()
        for patterns, config in self.entries:
            for pattern in patterns:
                has_tag = ":" in pattern.rpartition("/")[2]
                if any(fnmatch.fnmatchcase(n, pattern) for n in (tagged if has_tag else names)):
                    return config
        return Image()
