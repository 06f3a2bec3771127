"""A pod's sandbox on the host, and what each of its containers sees: argv, environment, cwd.

Each pod gets ``<state_dir>/pods/<namespace>_<name>_<uid8>/`` holding ``volumes/`` (emptyDir,
configMap, secret, downwardAPI and projected contents) and ``logs/``; PVC data lives in
``<state_dir>/volumes/<namespace>/<claim>/`` so it outlives pods. The container's view of ``/``
depends on the network mode (:mod:`.network`):

- **isolated**: the pod's own mount namespace (:mod:`.holder`) — an overlay of the host's root
  with the pod's ``upper/`` layer, mounted on ``rootfs/`` in that namespace only; volumes are
  bind-mounted at their mountPath, ``etc/`` holds the pod's hosts, hostname and resolv.conf.
  Paths are real: argv and env are passed as the pod gives them.
- **loopback**: containers are plain host processes and "inside the container" is emulated with
  paths. ``rootfs/`` holds only the paths a pod names (mount paths, home, working directory,
  image files); a volumeMount is a symlink ``rootfs/<mountPath>`` → the volume's host directory.
  Every env value and argument that names a path under a mount, the home or the working
  directory is rewritten to its rootfs path, and the literal ``0.0.0.0`` to the pod's own
  loopback address (every pod binds the same ports; see DESIGN §4).
"""

import base64
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from crater_hub.quantity import parse_quantity

from .servicelinks import service_links

DEFAULT_MODE = 0o644
# A dummy service-account token: localkube accepts any bearer token.
SERVICE_ACCOUNT_TOKEN = "localkube"


class MountError(Exception):
    """A volume cannot be set up (missing PVC, ConfigMap or Secret): the pod waits and retries."""


class ConfigError(Exception):
    """A container's env cannot be built (missing Secret/ConfigMap key): CreateContainerConfigError."""


@dataclass
class ContainerView:
    """Everything needed to start one container's process."""

    argv: list
    env: dict
    cwd: Path
    executable: str | None  # argv[0] resolved against the container's PATH; None if not found


def sandbox_dir(state_dir, pod):
    meta = pod["metadata"]
    return Path(state_dir) / "pods" / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"


def expand(text, env):
    """Kubernetes ``$(VAR)`` expansion: known names are replaced, unknown ones kept, ``$$`` is ``$``."""
    out = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if text.startswith("$(", i):
            end = text.find(")", i + 2)
            if end != -1:
                name = text[i + 2:end]
                out.append(env[name] if name in env else text[i:end + 1])
                i = end + 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def field_value(pod, path, ip, host_ip):
    """The value of a downward-API ``fieldRef.fieldPath``."""
    meta = pod["metadata"]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = sorted((meta.get(path.split(".")[1]) or {}).items())
        return "\n".join(f'{k}="{v}"' for k, v in items)
    simple = {
        "metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta["uid"],
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.podIP": ip, "status.podIPs": ip, "status.hostIP": host_ip, "status.hostIPs": host_ip,
    }
    if path not in simple:
        raise ConfigError(f'unsupported fieldPath "{path}"')
    return simple[path]


def resource_value(pod, container_name, ref, node):
    """The value of a ``resourceFieldRef`` (limits fall back to the node's allocatable)."""
    container = next((c for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
                      if c["name"] == (ref.get("containerName") or container_name)), {})
    kind, _, resource = ref["resource"].partition(".")
    amount = (container.get("resources", {}).get(kind) or {}).get(resource)
    if amount is None and kind == "limits":
        amount = ((node or {}).get("status", {}).get("allocatable") or {}).get(resource)
    try:
        value = parse_quantity(amount or 0) / parse_quantity(ref.get("divisor") or 1)
    except (ValueError, ZeroDivisionError) as e:
        raise ConfigError(f'resourceFieldRef "{ref["resource"]}": {e}') from None
    return str(math.ceil(value))


class Sandbox:
    """One pod's directories on the host and the container views built on them."""

    def __init__(self, state_dir, pod):
        self.state_dir = Path(state_dir).absolute()  # processes run elsewhere: paths must be absolute
        self.dir = sandbox_dir(self.state_dir, pod)
        self.rootfs = self.dir / "rootfs"
        self.volumes = {}  # volume name -> host path
        self.mounts = []  # isolated: what the pod's mount namespace binds, {source, target, readOnly}

    def log_file(self, container, previous=False):
        return self.dir / "logs" / container / ("previous.log" if previous else "current.log")

    def host_path(self, path):
        """Where a path inside the container lives on the host."""
        return self.rootfs / path.lstrip("/")

    def remove(self):
        """Delete the sandbox (mount symlinks are unlinked, never followed). Blocking: use a thread."""
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- volumes ---------------------------------------------------------------------------

    def prepare(self, store, pod, images, ip, host_ip, isolated=False):
        """Create every volume and, in loopback mode, the rootfs with mount points and image files.

        Isolated: record the mounts for the pod's namespace (:meth:`holder_spec` hands them over).
        Raises MountError naming the volume, worded like the kubelet's FailedMount events.
        """
        self.rootfs.mkdir(parents=True, exist_ok=True)
        self.mounts = []
        for vol in pod["spec"].get("volumes", []):
            try:
                self.volumes[vol["name"]] = self._volume(store, pod, vol, ip, host_ip)
            except MountError as e:
                raise MountError(f'MountVolume.SetUp failed for volume "{vol["name"]}" : {e}') from None
        containers = pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
        mounts = [m for c in containers for m in c.get("volumeMounts", [])]
        # As the kubelet does: these volumes are always mounted read-only.
        read_only = {v["name"] for v in pod["spec"].get("volumes", [])
                     if {"configMap", "secret", "downwardAPI", "projected"} & v.keys()}
        for mount in sorted(mounts, key=lambda m: len(m["mountPath"])):
            if mount["name"] not in self.volumes:
                raise MountError(f'unable to find volume "{mount["name"]}" for mount "{mount["mountPath"]}"')
            target = self.volumes[mount["name"]]
            if mount.get("subPath"):
                target = _sub_path(target, mount)
                if not target.exists():
                    target.mkdir(parents=True)
            if isolated:
                if all(m["target"] != mount["mountPath"] for m in self.mounts):  # one view per pod
                    self.mounts.append({"source": str(target), "target": mount["mountPath"],
                                        "readOnly": bool(mount.get("readOnly")) or mount["name"] in read_only})
            else:
                self._link(mount["mountPath"], target)
        if isolated:
            return
        for c in containers:
            for path, content in images.lookup(c["image"]).files.items():
                dest = self.host_path(path)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(content)

    def holder_spec(self, pod, images, *, ip, prefixlen, gateway, mask, shared=()):
        """What :mod:`.holder` needs to build the pod's namespaces (one JSON line).

        Writes the pod's ``/etc/hosts``, ``/etc/hostname`` and ``/etc/resolv.conf`` (nameserver:
        the gateway, where the cluster DNS answers) into the sandbox; the holder binds them.
        A ``hostNetwork`` pod keeps the host's network, name and those three files.
        """
        meta, spec = pod["metadata"], pod["spec"]
        host_network = bool(spec.get("hostNetwork"))
        hostname = spec.get("hostname") or meta["name"]
        names = hostname
        if spec.get("subdomain"):
            names = f"{hostname}.{spec['subdomain']}.{meta['namespace']}.svc.cluster.local {hostname}"
        ns = meta["namespace"]
        etc = self.dir / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(
            "# Kubernetes-managed hosts file (localkube).\n127.0.0.1\tlocalhost\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"{ip}\t{names}\n")
        (etc / "hostname").write_text(hostname + "\n")
        (etc / "resolv.conf").write_text(
            f"search {ns}.svc.cluster.local svc.cluster.local cluster.local\n"
            f"nameserver {gateway}\noptions ndots:5\n")
        containers = spec.get("initContainers", []) + spec["containers"]
        files, dirs = {}, []
        for c in containers:
            image = images.lookup(c["image"])
            files.update(image.files)
            dirs += [image.home, c.get("workingDir") or image.workdir]
        return {
            "hostname": None if host_network else hostname[:63], "root": str(self.rootfs),
            "upper": str(self.dir / "upper"), "work": str(self.dir / "work"), "scratch": str(self.dir / "scratch"),
            "mask": [str(p) for p in mask], "shared": [str(p) for p in shared], "mounts": self.mounts, "dirs": dirs, "files": files,
            "binds": {} if host_network else {
                f"/etc/{name}": str(etc / name) for name in ("hosts", "hostname", "resolv.conf")},
            "network": None if host_network else {"address": ip, "prefixlen": prefixlen, "gateway": gateway},
        }

    def _link(self, mount_path, target):
        link = self.host_path(mount_path)
        if link.is_symlink() or link == self.rootfs:
            return  # already mounted (two containers, one volume) or a mount over "/": keep the first
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_dir() and not any(link.iterdir()):
            link.rmdir()
        if not link.exists():
            link.symlink_to(target)

    def _volume(self, store, pod, vol, ip, host_ip):
        ns = pod["metadata"]["namespace"]
        registry = store.registry
        own = self.dir / "volumes" / vol["name"]
        if "persistentVolumeClaim" in vol:
            claim = vol["persistentVolumeClaim"]["claimName"]
            if store.find(registry.lookup("", "v1", "persistentvolumeclaims"), ns, claim) is None:
                raise MountError(f'persistentvolumeclaim "{claim}" not found')
            path = self.state_dir / "volumes" / ns / claim
            path.mkdir(parents=True, exist_ok=True)
            return path
        if "hostPath" in vol:
            path = Path(vol["hostPath"]["path"])
            kind = vol["hostPath"].get("type", "")
            if kind == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            elif kind == "FileOrCreate" and not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            elif kind in ("Directory", "File", "Socket") and not path.exists():
                raise MountError(f"hostPath type check failed: {path} is not a {kind}")
            return path
        own.mkdir(parents=True, exist_ok=True)
        if "configMap" in vol or "secret" in vol:
            self._write_object(store, ns, vol.get("configMap") or vol["secret"], "secret" in vol, own)
        elif "downwardAPI" in vol:
            self._write_downward(pod, vol["downwardAPI"], own, ip, host_ip)
        elif "projected" in vol:
            for source in vol["projected"].get("sources", []):
                mode = vol["projected"].get("defaultMode", DEFAULT_MODE)
                if "configMap" in source or "secret" in source:
                    ref = dict(source.get("configMap") or source["secret"], defaultMode=mode)
                    self._write_object(store, ns, ref, "secret" in source, own)
                elif "downwardAPI" in source:
                    self._write_downward(pod, source["downwardAPI"], own, ip, host_ip)
                elif "serviceAccountToken" in source:
                    _write(own / source["serviceAccountToken"].get("path", "token"), SERVICE_ACCOUNT_TOKEN.encode(), mode)
        # emptyDir (any medium) and volume types localkube does not know: an empty directory.
        return own

    def _write_object(self, store, ns, ref, secret, dest):
        """Materialize a ConfigMap's or Secret's keys as files (``items`` and modes honoured)."""
        plural, name = ("secrets", ref.get("secretName") or ref.get("name")) if secret else ("configmaps", ref.get("name"))
        obj = store.find(store.registry.lookup("", "v1", plural), ns, name)
        if obj is None:
            if name == "kube-root-ca.crt":
                obj = {"data": {"ca.crt": ""}}  # what the API server publishes in every namespace
            elif ref.get("optional"):
                return
            else:
                raise MountError(f'{"secret" if secret else "configmap"} "{name}" not found')
        files = {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
        for key, value in (obj.get("data") or {}).items():
            files[key] = base64.b64decode(value) if secret else value.encode()
        mode = ref.get("defaultMode", DEFAULT_MODE)
        items = ref.get("items") or [{"key": k, "path": k} for k in files]
        for item in items:
            if item["key"] not in files:
                if ref.get("optional"):
                    continue
                raise MountError(f'configmap references non-existent config key: {item["key"]}')
            _write(dest / item["path"], files[item["key"]], item.get("mode", mode))

    def _write_downward(self, pod, spec, dest, ip, host_ip):
        mode = spec.get("defaultMode", DEFAULT_MODE)
        for item in spec.get("items", []):
            if "fieldRef" in item:
                value = field_value(pod, item["fieldRef"]["fieldPath"], ip, host_ip)
            else:
                value = resource_value(pod, item["resourceFieldRef"].get("containerName"), item["resourceFieldRef"], None)
            _write(dest / item["path"], value.encode(), item.get("mode", mode))

    # -- what a container sees -----------------------------------------------------------

    def view(self, store, pod, container, image, *, ip, host_ip, node, api, device_env, root=None):
        """Build argv, env and cwd for ``container`` (OCI and Kubernetes semantics).

        ``api``: (host, port) of the API server; ``device_env``: what the device plugin adds.
        ``root``: isolated mode, where the pod's view of ``/`` is seen from here
        (``/proc/<holder>/root``): paths are real, nothing is rewritten, cwd is the container's
        own; without it (loopback), paths are mapped into the rootfs and 0.0.0.0 to ``ip``.
        Raises ConfigError when a referenced ConfigMap/Secret or key is missing.
        """
        home = image.home
        workdir = container.get("workingDir") or image.workdir
        if root is None:
            cwd = self.host_path(workdir)
            for path in (self.host_path(home), cwd):
                path.mkdir(parents=True, exist_ok=True)
        else:
            cwd = Path(workdir)
        # What the pod defines; $(VAR) references see only these, as in Kubernetes.
        env = {**service_links(store, store.registry, pod), "HOME": home, "HOSTNAME": pod["metadata"]["name"],
               "KUBERNETES_SERVICE_HOST": api[0], "KUBERNETES_SERVICE_PORT": str(api[1])}
        for source in container.get("envFrom", []):
            for key, value in self._env_source(store, pod, source).items():
                env[source.get("prefix", "") + key] = value
        for var in container.get("env", []):
            value = self._env_value(store, pod, container, var, env, ip, host_ip, node)
            if value is not None:
                env[var["name"]] = value

        command, args = container.get("command"), container.get("args")
        argv = list(command) if command else list(image.entrypoint)
        argv += args if args else ([] if command else list(image.cmd))
        argv = [expand(a, env) for a in argv]

        device_env = {**device_env, **image.device_aliases(device_env, env)}
        if root is not None:
            env = {**image.environment(""), **env, **device_env}
            env.setdefault("PATH", os.defpath)
            program = _resolve(argv[0], env["PATH"], cwd, root) if argv else None
            return ContainerView(argv, env, cwd, program)
        prefixes = {m["mountPath"] for m in container.get("volumeMounts", [])} | {home, workdir}
        rewrite = _rewriter(str(self.rootfs), prefixes, ip)
        argv = [rewrite(a) for a in argv]
        # The image's env is already in host terms ({rootfs}, {python_bin}): only pod values are mapped.
        env = {**{k: v.replace("0.0.0.0", ip) for k, v in image.environment(self.rootfs).items()},
               **{k: rewrite(v) for k, v in env.items()}, **device_env}
        if "PATH" not in env:
            env["PATH"] = os.defpath
        program = _resolve(argv[0], env["PATH"], cwd) if argv else None
        return ContainerView(argv, env, cwd, program)

    def _env_source(self, store, pod, source):
        """envFrom: a whole ConfigMap or Secret as variables."""
        secret = "secretRef" in source
        ref = source.get("secretRef") or source.get("configMapRef") or {}
        obj = store.find(store.registry.lookup("", "v1", "secrets" if secret else "configmaps"),
                         pod["metadata"]["namespace"], ref.get("name"))
        if obj is None:
            if ref.get("optional"):
                return {}
            raise ConfigError(f'{"secret" if secret else "configmap"} "{ref.get("name")}" not found')
        data = obj.get("data") or {}
        return {k: base64.b64decode(v).decode(errors="replace") if secret else v for k, v in data.items()}

    def _env_value(self, store, pod, container, var, env, ip, host_ip, node):
        """One ``env`` entry's value (None: an optional reference that is missing)."""
        if "valueFrom" not in var:
            return expand(var.get("value", ""), env)
        source = var["valueFrom"]
        if "fieldRef" in source:
            return field_value(pod, source["fieldRef"]["fieldPath"], ip, host_ip)
        if "resourceFieldRef" in source:
            return resource_value(pod, container["name"], source["resourceFieldRef"], node)
        secret = "secretKeyRef" in source
        ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
        if ref is None:
            raise ConfigError(f'env var "{var["name"]}": unsupported valueFrom {sorted(source)}')
        kind = "Secret" if secret else "ConfigMap"
        ns = pod["metadata"]["namespace"]
        obj = store.find(store.registry.lookup("", "v1", "secrets" if secret else "configmaps"), ns, ref["name"])
        if obj is None:
            if ref.get("optional"):
                return None
            raise ConfigError(f'{kind.lower()} "{ref["name"]}" not found')
        data = obj.get("data") or {}
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise ConfigError(f"couldn't find key {ref['key']} in {kind} {ns}/{ref['name']}")
        value = data[ref["key"]]
        return base64.b64decode(value).decode(errors="replace") if secret else value


def _write(path, content, mode):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.chmod(path, mode)


# Characters that end a path in a command line or an env value (whitespace, lists, shell syntax).
_BREAKS = r"""\s:,;'"<>|&()`"""


def _rewriter(rootfs, prefixes, ip):
    """A function mapping container paths in a string to rootfs paths, and 0.0.0.0 to ``ip``.

    A path counts only when it starts at a word boundary (start, ``=``, whitespace or shell
    punctuation before it), so ``--notebook-dir=/home/jovyan`` and ``sh -c 'ls /data;'`` are
    rewritten but a URL path is not. A path that
    exists on the host but not in the rootfs is left alone: it names a host file on purpose (our
    Python under ``/root``, say, when the image's home is ``/root``).
    """
    prefixes = sorted((p.rstrip("/") for p in prefixes if p and p.rstrip("/")), key=len, reverse=True)
    pattern = None
    if prefixes:
        alternatives = "|".join(map(re.escape, prefixes))
        pattern = re.compile(rf"(?<![^{_BREAKS}=])(?:{alternatives})(?:/[^{_BREAKS}]*)?(?=$|[{_BREAKS}])")

    def mapped(match):
        path = match.group(0)
        if path.startswith(rootfs) or (os.path.exists(path) and not os.path.lexists(rootfs + path)):
            return path
        return rootfs + path

    def rewrite(value):
        value = value.replace("0.0.0.0", ip)
        return pattern.sub(mapped, value) if pattern else value

    return rewrite


def _resolve(program, path, cwd, root=None):
    """Find ``program`` as execve would for the container: on its PATH, or relative to its cwd.

    ``root``: the container's ``/`` as seen from here; the answer is then a path in the container.
    """
    def usable(candidate):
        seen = Path(root, str(candidate).lstrip("/")) if root else Path(candidate)
        return os.access(seen, os.X_OK) and seen.is_file()

    if "/" in program:
        candidate = Path(program) if program.startswith("/") else cwd / program
        return str(candidate) if usable(candidate) else None
    if root is None:
        return shutil.which(program, path=path)
    for directory in path.split(os.pathsep):
        if directory.startswith("/") and usable(Path(directory, program)):
            return str(Path(directory, program))
    return None


def _sub_path(volume, mount):
    """The host directory of a mount's ``subPath`` inside ``volume``; as the kubelet does, a
    subPath that leads out of the volume (``..``, an absolute path, a symlink to elsewhere) is
    refused. A symlink to another folder of the same volume is followed, as there."""
    sub = mount["subPath"]
    target = volume / sub
    base = os.path.realpath(volume)
    real = os.path.realpath(target)
    if sub.startswith("/") or ".." in sub.split("/") or not (real == base or real.startswith(base + os.sep)):
        raise MountError(f'failed to prepare subPath for volumeMount "{mount["name"]}": subpath '
                         f'"{sub}" is not within the volume')
    return target
