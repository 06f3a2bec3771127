"""A pod's namespace holder (what the pause container is to a real runtime).

Run by the kubelet as ``python -I -S holder.py`` (standard library only: it starts fast and sees
nothing of the package). It reads one JSON line on stdin describing the pod, then:

1. unshares network, UTS, IPC and mount namespaces (a ``hostNetwork`` pod: IPC and mount only)
   and says ``unshared`` (the kubelet then moves the veth's pod end in, as ``eth0``) and waits
   for a ``net`` line;
2. configures ``lo`` and ``eth0`` (address, default route via the gateway);
3. builds the pod's filesystem view: an overlay with ``lowerdir=/`` and the pod's upper and work
   directories (a tmpfs holds them when their filesystem cannot: it says so), fresh ``/proc``,
   ``/sys``, ``/dev`` (the host's, with a ``/dev/shm`` of its own), the shared host directories
   bound as they are, the masked paths (localkube's state directory) hidden under empty
   read-only tmpfs (over a shared directory too), the volumes bound at their mount paths
   (read-only remounted where asked), ``/etc/hosts``, ``/etc/hostname``, ``/etc/resolv.conf``
   bound from the sandbox, the image's files written; sets the hostname; pivots into the view;
4. says ``ready <overlay|tmpfs>`` and becomes ``sleep infinity`` (much smaller than Python;
   namespaces, the parent-death signal and the kubelet's marker survive the exec) until killed.

Containers join with setns(2) on ``/proc/<holder pid>/ns/*`` and so see exactly this. Every
mount lives in the pod's mount namespace only: when the holder and the containers are gone,
the kernel drops namespaces, veth and mounts; nothing is left on the host.
"""

import ctypes
import errno
import json
import os
import shutil
import subprocess
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWNET = 0x20000, 0x04000000, 0x08000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine, 155)

libc = ctypes.CDLL(None, use_errno=True)


def check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source, target, fstype, flags=0, data=None):
    check(libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(), flags,
                     data and data.encode()), f"mount {source} on {target}")


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def view_path(root, path, follow_last=True):
    """``path`` of the pod's view as a path under ``root``, its symlinks resolved within the view.

    Before pivot_root an absolute symlink in the view (``/var/run -> /run``) would otherwise be
    followed on the host: a pod's mount path or working directory would create or mount things in
    the host's directories. ``follow_last=False`` keeps the last component as it is (a symlink to
    be replaced by a mount point).
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved, hops = [], 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            resolved = resolved[:-1]
            continue
        candidate = os.path.join(root, *resolved, part)
        if (parts or follow_last) and os.path.islink(candidate):
            hops += 1
            if hops > 40:
                raise OSError(errno.ELOOP, f"{path}: too many levels of symbolic links")
            link = os.readlink(candidate)
            if link.startswith("/"):
                resolved = []
            parts = [p for p in link.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def ensure_target(root, path, is_dir):
    """A mount point of the right kind for the view's ``path`` (a symlink in the way, e.g.
    /etc/resolv.conf, is replaced); its path under ``root``."""
    target = view_path(root, path, follow_last=False)
    if os.path.islink(target):
        os.unlink(target)
    if is_dir:
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    return target


def build_view(spec):
    root = spec["root"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing propagates back to the host
    layer = "overlay"
    # A pulled image's layers lie over the host's root (topmost first), as an image's over its
    # base. Overlay refuses a lower directory below another lower one (ELOOP: the layers are
    # under "/"), so "/" enters through an overlay of its own (another filesystem), never written.
    bottom = "/"
    if spec.get("lowers"):
        sandbox = os.path.dirname(spec["upper"])
        bottom = os.path.join(sandbox, "base")
        base_upper, base_work = os.path.join(sandbox, "base-upper"), os.path.join(sandbox, "base-work")
        for d in (bottom, base_upper, base_work):
            os.makedirs(d, exist_ok=True)
        mount("overlay", bottom, "overlay", MS_RDONLY, f"lowerdir=/,upperdir={base_upper},workdir={base_work}")
    lowerdir = ":".join([*spec.get("lowers", ()), bottom])
    options = f"lowerdir={lowerdir},upperdir={spec['upper']},workdir={spec['work']}"
    for d in (spec["upper"], spec["work"], root):
        os.makedirs(d, exist_ok=True)
    try:
        mount("overlay", root, "overlay", 0, options)
    except OSError:
        # The upper layer's filesystem cannot host an overlay upper: keep the pod's writes in memory.
        layer = "tmpfs"
        scratch = spec["scratch"]
        os.makedirs(scratch, exist_ok=True)
        mount("tmpfs", scratch, "tmpfs", 0, "mode=0700")
        for d in ("upper", "work"):
            os.makedirs(os.path.join(scratch, d), exist_ok=True)
        mount("overlay", root, "overlay", 0,
              f"lowerdir={lowerdir},upperdir={scratch}/upper,workdir={scratch}/work")
    mount("proc", view_path(root, "/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("sysfs", view_path(root, "/sys"), "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    mount("/dev", view_path(root, "/dev"), None, MS_BIND | MS_REC)
    shm = view_path(root, "/dev/shm")
    os.makedirs(shm, exist_ok=True)
    mount("shm", shm, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for path in spec.get("shared", ()):  # host directories every pod sees as they are (opt-in, tests)
        if os.path.isdir(path):
            mount(path, ensure_target(root, path, True), None, MS_BIND | MS_REC)
    for path in spec["mask"]:
        target = view_path(root, path)
        if os.path.isdir(target):
            mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=0755")
    for m in sorted(spec["mounts"], key=lambda m: len(m["target"].rstrip("/"))):
        target = ensure_target(root, m["target"], os.path.isdir(m["source"]))
        mount(m["source"], target, None, MS_BIND | MS_REC)
        if m.get("readOnly"):
            mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    for path, source in spec["binds"].items():
        mount(source, ensure_target(root, path, False), None, MS_BIND)
    if spec["hostname"] is not None:
        name = spec["hostname"].encode()
        check(libc.sethostname(name, len(name)), "sethostname")
    # Make the view the root: pivot_root(".", ".") stacks the old root on the new one, then detach it.
    os.chdir(root)
    check(libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    check(libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    # Now paths are the pod's own: its symlinks lead where they lead for the pod.
    for path in spec["dirs"]:
        os.makedirs(path, exist_ok=True)
    for path, content in spec["files"].items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(content)
    return layer


def configure_network(spec, ip_binary):
    net = spec["network"]
    batch = "\n".join([
        "link set lo up",
        f"addr add {net['address']}/{net['prefixlen']} dev eth0",
        "link set eth0 up",
        f"route add default via {net['gateway']} dev eth0",
    ]) + "\n"
    done = subprocess.run([ip_binary, "-batch", "-"], input=batch.encode(), capture_output=True)
    if done.returncode:
        raise OSError(f"configuring eth0: {done.stderr.decode().strip()}")


def main():
    spec = json.loads(sys.stdin.readline())
    ip_binary = shutil.which("ip") or "/usr/sbin/ip"
    sleep_binary = shutil.which("sleep")
    try:
        own_network = spec["network"] is not None  # hostNetwork pods keep the host's (and its name)
        check(libc.unshare(CLONE_NEWNS | CLONE_NEWIPC | (CLONE_NEWNET | CLONE_NEWUTS if own_network else 0)),
              "unshare")
        say("unshared")
        layer = build_view(spec)
        if sys.stdin.readline().strip() != "net":
            return 1
        if own_network:
            configure_network(spec, ip_binary)
    except OSError as e:
        say(f"error {e}")
        return 1
    say(f"ready {layer}")
    # Namespaces, PR_SET_PDEATHSIG and the kubelet's marker survive execve: hold them in a process
    # a tenth of this interpreter's size (a pod's view is the host's, so sleep is there).
    if sleep_binary:
        try:
            os.execv(sleep_binary, [sleep_binary, "infinity"])
        except OSError:
            pass
    sys.stdin.read()  # until the kubelet closes our stdin or kills us
    return 0


if __name__ == "__main__":
    sys.exit(main())
