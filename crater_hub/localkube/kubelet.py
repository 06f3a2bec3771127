"""The process kubelet: runs every pod bound to any node as local processes.

One Kubelet serves all nodes of the cluster. For each bound pod it allocates an address from the
pod network (:mod:`.network`), prepares the pod's sandbox (:mod:`.sandbox`) and, when isolated,
starts the pod's namespace holder (:mod:`.holder`: network, UTS, IPC and mount namespaces, which
every container of the pod joins — one mount view per pod, not per container), runs the init
containers one after the other and then the containers, each as a process in its own process
group, and keeps ``status`` (phase, conditions, container statuses) and the usual events as a
real kubelet would. restartPolicy and back-off decide restarts; a deletion sends SIGTERM, waits
the grace period, then SIGKILLs, and only then removes the pod from the store.

No process may outlive localkube: each container's process gets PR_SET_PDEATHSIG, every process a
container starts inherits a ``LOCALKUBE_CONTAINER`` marker in its environment (what a cgroup is to
a real runtime: the way to find every process of a container, even those that left its process
group), ``stop()`` kills them all, and ``start()`` sweeps up what a crashed predecessor left
behind in the same state directory.
"""

import asyncio
import copy
import ctypes
import errno
import functools
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from . import events
from .controller import Controller
from .devices import device_env_for_pod
from .errors import ApiError
from .images import ImageTable, image_id
from .network import NetworkError, PodNetwork
from .pull import Puller, PullError, credentials_for, registry_host
from .sandbox import ConfigError, MountError, Sandbox
from .store import isotime

log = logging.getLogger("localkube")

MARKER = "LOCALKUBE_CONTAINER"
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
# What an unprivileged container may not have: containerd's default set is kept (chown, dac_override,
# fowner, fsetid, kill, setgid, setuid, setpcap, net_bind_service, net_raw, sys_chroot, setfcap,
# audit_write) except mknod (no device cgroup here: /dev is the host's); everything else goes,
# CAP_SYS_ADMIN (mount, umount, setns) and CAP_SYS_PTRACE (/proc/<pid>/root) first.
_KEPT_CAPS = {0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 29, 31}
DROPPED_CAPS = tuple(c for c in range(64) if c not in _KEPT_CAPS)
HOLDER = str(Path(__file__).with_name("holder.py"))
HOLDER_TIMEOUT = 30.0
_libc = ctypes.CDLL(None, use_errno=True)
# Joined in this order: the mount namespace last, since /proc/<pid>/ns is looked up in the host's view.
_NAMESPACES = ("ipc", "uts", "net", "mnt")


class SandboxError(Exception):
    """The pod's namespaces could not be made (FailedCreatePodSandBox); the kubelet retries."""


def log_path(cluster, pod, container, previous=False):
    """Where ``container``'s log is (``previous``: its previous instance's, kept across one restart).

    Plain text, stdout and stderr interleaved as written. The file may not exist yet (the container
    has not started). The container is still writing to it while its status ``state`` is ``running``.
    """
    return Sandbox(cluster.state_dir, pod).log_file(container, previous)


def _die_with_parent(parent):
    """preexec_fn: SIGKILL this process when localkube's loop thread dies."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)  # localkube died before prctl took effect


def _enter_pod(parent, holder, cwd, privileged=False):
    """preexec_fn: die with localkube, join the pod's namespaces, go to the container's cwd and,
    unless the container is privileged, give up the capabilities that would undo the isolation."""
    _die_with_parent(parent)
    _setns(holder, _NAMESPACES)  # needs CAP_SYS_ADMIN: before the drop
    os.chdir(cwd)
    if not privileged:
        _drop_capabilities()


def _privileged(container):
    return bool((container.get("securityContext") or {}).get("privileged"))


def _drop_capabilities():
    """Remove DROPPED_CAPS from the bounding and inheritable sets (so no program this process
    execs, setuid ones included, can have them). Root's exec then keeps every other capability.

    Without CAP_SYS_PTRACE, and with fewer capabilities than localkube and the host's processes,
    the kernel's ptrace access check refuses ``/proc/<pid>/root``, ``/cwd``, ``/environ``,
    ``/ns`` of those (a way around the masks); without CAP_SYS_ADMIN the pod cannot unmount its
    masks or remount its read-only volumes.
    """
    for cap in DROPPED_CAPS:
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            if err != errno.EINVAL:  # a capability this kernel does not know
                raise OSError(err, f"PR_CAPBSET_DROP {cap}: {os.strerror(err)}")
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # {effective, permitted, inheritable} x 2 words
    if _libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    for cap in DROPPED_CAPS:
        data[3 * (cap // 32) + 2] &= ~(1 << (cap % 32)) & 0xFFFFFFFF
    if _libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def _setns(pid, namespaces):
    for ns in namespaces:
        fd = os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY)
        try:
            if _libc.setns(fd, 0) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns {ns}: {os.strerror(err)}")
        finally:
            os.close(fd)


def _socket_in(pid):
    """A TCP socket created in process ``pid``'s network namespace (sockets keep their netns).

    Blocking and thread-local: run it in a thread of its own (``asyncio.to_thread``)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(pid, ("net",))
        try:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            if _libc.setns(own, 0) != 0:  # a thread left in the pod would poison the pool
                os._exit(70)
    finally:
        os.close(own)


def kill_marked(prefix):
    """SIGKILL every process marked as a container of a sandbox under ``prefix``. Blocking."""
    _kill(_marked_pids(prefix))


def _marked_pids(prefix):
    """PIDs of processes whose LOCALKUBE_CONTAINER marker starts with ``prefix`` (a /proc scan)."""
    key = f"{MARKER}={prefix}".encode()
    own = os.getpid()
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if any(var.startswith(key) for var in environ.split(b"\0")):
            pids.append(int(entry.name))
    return pids


def _log_failure(task):
    if not task.cancelled() and task.exception():
        log.error("kubelet: %s failed", task.get_name(), exc_info=task.exception())


def _kill(pids, sig=signal.SIGKILL):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _go_duration(seconds):
    """Seconds as Go prints a time.Duration ("10s", "2m40s", "500ms"), as kubelet messages do."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


class ContainerRun:
    """One container of a running pod, across its restarts."""

    def __init__(self, spec, init, after_inits):
        self.spec = spec
        self.name = spec["name"]
        self.init = init
        self.restart_count = 0
        self.state = {"waiting": {"reason": "PodInitializing" if after_inits else "ContainerCreating"}}
        self.last_state = {}
        self.container_id = None  # 64 hex digits of the current (or last) instance
        self.proc = None
        self.spawning = None  # the task starting the process: never cancelled half-way
        self.done = False  # finished for good (restartPolicy says no more restarts)

    @property
    def marker(self):
        return f"{self.name}/{self.container_id}"

    def status(self):
        """This container's entry in ``containerStatuses`` / ``initContainerStatuses``."""
        running = "running" in self.state
        term = self.state.get("terminated", {})
        out = {
            "name": self.name,
            "image": self.spec["image"],
            "imageID": image_id(self.spec["image"]),
            "ready": (term.get("exitCode") == 0) if self.init else running,
            "started": running,
            "restartCount": self.restart_count,
            "state": copy.deepcopy(self.state),
            "lastState": copy.deepcopy(self.last_state),
        }
        if self.container_id:
            out["containerID"] = f"containerd://{self.container_id}"
        return out


class PulledTable:
    """The image table as one pod sees it: a pulled image runs its recorded base's programs."""

    def __init__(self, table, pulled):
        self.table, self.pulled = table, pulled

    def lookup(self, image):
        found = self.pulled.get(image)
        return self.table.lookup(found.base if found else image)


class PodRun:
    """The kubelet's record of one pod it runs."""

    def __init__(self, pod, sandbox, ip):
        meta = pod["metadata"]
        self.holder = None  # isolated: the process keeping the pod's namespaces
        self.veth = None
        self.pod = pod
        self.uid, self.namespace, self.name = meta["uid"], meta["namespace"], meta["name"]
        self.node = pod["spec"]["nodeName"]
        self.sandbox = sandbox
        self.ip = ip
        self.start_time = isotime()
        inits = pod["spec"].get("initContainers", [])
        self.containers = ([ContainerRun(c, True, False) for c in inits]
                           + [ContainerRun(c, False, bool(inits)) for c in pod["spec"]["containers"]])
        self.images = None  # the image table, with this pod's pulled images (see Kubelet._pull)
        self.lowers = ()  # overlay lower directories of the pod's pulled image, topmost first
        self.sandbox_ready = False
        self.init_done = not pod["spec"].get("initContainers")
        self.init_failed = False
        self.driver = None
        self.terminating = None
        self.kill_now = asyncio.Event()  # a graceful stop that must end at once (grace 0, shutdown)

    @property
    def ref(self):
        return f"{self.name}_{self.namespace}({self.uid})"

    def marker_prefix(self):
        return f"{self.sandbox.dir}/"

    def phase(self):
        mains = [c for c in self.containers if not c.init]
        if self.init_failed:
            return "Failed"
        if not self.init_done:
            return "Pending"
        if all(c.done for c in mains):
            ok = all(c.state.get("terminated", {}).get("exitCode") == 0 for c in mains)
            return "Succeeded" if ok else "Failed"
        return "Running" if any(c.container_id for c in mains) else "Pending"


class Kubelet(Controller):
    """Runs pods bound to any node (``spec.nodeName`` set) as process groups on this machine."""

    watches = (("", "pods"),)
    backoff_base = 10.0  # first restart delay; doubles per restart up to backoff_max
    backoff_max = 300.0
    backoff_reset = 600.0  # a container that ran this long restarts its back-off from the base
    retry_delay = 2.0  # before retrying a failed mount or a missing env reference
    stop_grace = 3.0  # how long stop() lets processes handle SIGTERM

    def __init__(self, cluster):
        super().__init__(cluster)
        self.pods = self.res("", "pods")
        self.nodes = self.res("", "nodes")
        self.images = ImageTable.load(getattr(cluster, "image_table_file", None))
        self.net = getattr(cluster, "network", None)
        if self.net is None:  # controller tests on a bare store
            self.net = PodNetwork(cluster.state_dir, isolation="loopback")
        self.runs = {}  # (namespace, name) -> PodRun
        self.puller = Puller(cluster.state_dir)

    @property
    def host_ip(self):
        """The node's address as pods see it (the gateway when isolated)."""
        return self.net.gateway_ip

    def start(self):
        _kill(_marked_pids(self._marker_root()))  # what a localkube that died with this state dir left
        super().start()

    async def reconcile(self, key):
        _, ns, name = key
        pod = self.store.find(self.pods, ns, name)
        run = self.runs.get((ns, name))
        if run and (pod is None or pod["metadata"]["uid"] != run.uid):
            # Removed at once (grace 0, force, a finished pod) or replaced: nothing may keep running.
            await self._shutdown(run, grace=0)
            run = None
        if pod is None or not pod["spec"].get("nodeName"):
            return
        if pod["metadata"].get("deletionTimestamp"):
            if run is None:
                self.store.remove(self.pods, ns, name)  # nothing of it runs here
            else:
                self._shutdown(run, grace=pod["metadata"].get("deletionGracePeriodSeconds", 30), remove=True)
            return
        if run is None and pod["status"].get("phase") not in ("Succeeded", "Failed"):
            host_network = self.net.isolated and pod["spec"].get("hostNetwork")  # the node's address
            ip = self.host_ip if host_network else self.net.allocate(pod["metadata"]["uid"])
            run = PodRun(pod, Sandbox(self.cluster.state_dir, pod), ip)
            self.runs[(ns, name)] = run
            self._publish(run)
            run.driver = asyncio.create_task(self._run_pod(run), name=f"pod {ns}/{name}")
            run.driver.add_done_callback(_log_failure)
        elif run is not None:
            run.pod = pod

    async def stop(self):
        """Stop every pod: SIGTERM, up to ``stop_grace`` seconds, then SIGKILL; nothing is left."""
        await super().stop()
        runs = list(self.runs.values())
        tasks = [self._shutdown(run, grace=self.stop_grace, record=False) for run in runs]
        if tasks:
            await asyncio.wait(tasks, timeout=self.stop_grace)  # also cuts longer deletions short
            for run in runs:
                run.kill_now.set()
            # a deletion already under way may have been cancelled with its reconcile: that is fine,
            # every process is killed below either way
            await asyncio.gather(*tasks, return_exceptions=True)
        _kill(await asyncio.to_thread(_marked_pids, self._marker_root()))

    def _marker_root(self):
        return f"{self.cluster.state_dir.absolute() / 'pods'}/"

    # -- addresses ----------------------------------------------------------------------------

    def _release_ip(self, run):
        self.net.release(run.ip, run.uid)

    # -- entering a pod (pods/exec, port-forward) --------------------------------------------

    def _running(self, namespace, pod_name):
        run = self.runs.get((namespace, pod_name))
        if run is None or run.terminating is not None or (self.net.isolated and run.holder is None):
            raise LookupError(f"pod {namespace}/{pod_name} is not running here")
        return run

    def enter(self, namespace, pod_name, container):
        """``(env, cwd, preexec_fn)`` to run a process in ``container`` of a running pod.

        Isolated: pass ``cwd=None`` to subprocess; ``preexec_fn`` joins the pod's namespaces and
        changes to the container's working directory (the ``cwd`` returned, a path in the pod).
        Loopback: ``cwd`` is the working directory's host path (pass it), and argv paths must be
        mapped as :mod:`.sandbox` maps a container's.
        The env is the container's own (as its main process got it), marked as the container's
        so the process dies with it. Raises LookupError if the pod or container is not running.
        """
        run = self._running(namespace, pod_name)
        c = next((c for c in run.containers if c.name == container), None)
        if c is None or c.proc is None or "running" not in c.state:
            raise LookupError(f"container {container} of pod {namespace}/{pod_name} is not running")
        view = self._view(run, c)
        env = {**view.env, MARKER: f"{run.marker_prefix()}{c.marker}"}
        if run.holder is None:  # loopback: a host process in the container's rootfs directory
            return env, str(view.cwd), functools.partial(_die_with_parent, os.getpid())
        return env, str(view.cwd), functools.partial(_enter_pod, os.getpid(), run.holder.pid, str(view.cwd),
                                                     _privileged(c.spec))

    async def open_connection(self, namespace, pod_name, port):
        """``(reader, writer)`` connected to ``127.0.0.1:port`` inside the pod's network namespace."""
        run = self._running(namespace, pod_name)
        if not self.net.isolated:
            return await asyncio.open_connection(run.ip, port)
        sock = await asyncio.to_thread(_socket_in, run.holder.pid)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    def _view(self, run, c):
        node = self.store.find(self.nodes, None, run.node) or {}
        root = f"/proc/{run.holder.pid}/root" if run.holder else None
        return run.sandbox.view(
            self.store, run.pod, c.spec, (run.images or self.images).lookup(c.spec["image"]), ip=run.ip,
            host_ip=self.host_ip, node=node, api=(self.host_ip, self.cluster.port),
            device_env=device_env_for_pod(run.pod, node), root=root)

    # -- the pod's namespaces ------------------------------------------------------------------

    async def _start_holder(self, run):
        """Start the pod's holder and join it to the bridge; raises SandboxError."""
        spec = run.sandbox.holder_spec(
            run.pod, run.images or self.images, ip=run.ip, prefixlen=self.net.pod_cidr.prefixlen,
            gateway=self.net.gateway_ip, mask=self._masked(), shared=getattr(self.cluster, "shared_paths", ()))
        spec["lowers"] = list(run.lowers)
        errors = run.sandbox.dir / "holder.log"
        errors.parent.mkdir(parents=True, exist_ok=True)
        err = os.open(errors, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o644)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", HOLDER, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=err, start_new_session=True, cwd="/",
                env={"PATH": os.environ.get("PATH", os.defpath), MARKER: f"{run.marker_prefix()}holder"},
                preexec_fn=functools.partial(_die_with_parent, os.getpid()))
        finally:
            os.close(err)
        run.holder = proc
        try:
            proc.stdin.write(json.dumps(spec).encode() + b"\n")
            await self._holder_says(run, "unshared", errors)
            if spec["network"] is not None:
                run.veth = self.net.new_veth()  # before: a deletion during attach detaches it
                await self.net.attach(proc.pid, run.ip, run.veth)
            proc.stdin.write(b"net\n")
            layer = await self._holder_says(run, "ready", errors)
        except (SandboxError, NetworkError, OSError, asyncio.TimeoutError) as e:
            await self._stop_holder(run)
            raise SandboxError(str(e)) from None
        if layer != "overlay":
            log.warning("pod %s: the upper layer's filesystem cannot host an overlay: writes go to a tmpfs",
                        run.ref)

    async def _holder_says(self, run, word, errors):
        line = (await asyncio.wait_for(run.holder.stdout.readline(), HOLDER_TIMEOUT)).decode().strip()
        said, _, rest = line.partition(" ")
        if said != word:
            detail = rest if said == "error" else (errors.read_text(errors="replace").strip()[-500:] or "exited")
            raise SandboxError(f"failed to create pod sandbox: {detail}")
        return rest

    def _masked(self):
        """Paths no pod may see: localkube's state directory (every pod's volumes) and more."""
        return [self.cluster.state_dir.absolute(), *getattr(self.cluster, "masked_paths", ())]

    async def _stop_holder(self, run):
        proc, run.holder = run.holder, None
        if proc is not None:
            proc.stdin.close()
            if proc.returncode is None:
                _kill([proc.pid])
            await proc.wait()
        if run.veth and self.net.started:
            await self.net.detach(run.ip, run.veth)
        run.veth = None

    # -- running a pod -------------------------------------------------------------------------

    async def _pull(self, run):
        """Pull the pod's registry images (those its imagePullSecrets hold credentials for), with
        back-off on failure as ErrImagePull; the rest are image-table entries."""
        secrets = self.store.registry.lookup("", "v1", "secrets")
        pulled = {}
        for c in run.pod["spec"].get("initContainers", []) + run.pod["spec"]["containers"]:
            image = c["image"]
            host = registry_host(image)
            creds = host and credentials_for(run.pod, host, lambda ns, name: self.store.find(secrets, ns, name))
            if not creds or image in pulled:
                continue
            delay = self.retry_delay
            while True:
                self._event(run, "Pulling", f'Pulling image "{image}"')
                began = time.monotonic()
                try:
                    pulled[image] = await self.puller.pull(image, creds)
                    break
                except (PullError, OSError, ValueError) as e:
                    self._event(run, "Failed", f'Failed to pull image "{image}": {e}', "Warning")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 60)
            self._event(run, "Pulled", f'Successfully pulled image "{image}" in {time.monotonic() - began:.3f}s')
        if pulled:
            run.images = PulledTable(self.images, pulled)
            # one mount view per pod: the first pulled image's layers are its root
            first = next(c["image"] for c in run.pod["spec"]["containers"] + run.pod["spec"].get("initContainers", [])
                         if c["image"] in pulled)
            run.lowers = pulled[first].lowers

    async def _run_pod(self, run):
        delay = self.retry_delay
        await self._pull(run)
        while True:
            try:
                run.sandbox.prepare(self.store, run.pod, run.images or self.images, run.ip, self.host_ip,
                                    isolated=self.net.isolated)
            except (MountError, OSError) as e:
                self._event(run, "FailedMount", str(e), "Warning")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60)
                continue
            if not self.net.isolated:
                break
            began = time.monotonic()
            try:
                await self._start_holder(run)
                log.debug("pod %s: namespaces in %.0f ms", run.ref, (time.monotonic() - began) * 1000)
                break
            except SandboxError as e:
                self._event(run, "FailedCreatePodSandBox", str(e), "Warning")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60)
        run.sandbox_ready = True
        self._publish(run)
        for c in run.containers:
            if c.init and not await self._supervise(run, c):
                run.init_failed = True
                break
        else:
            run.init_done = True
            self._publish(run)
            await asyncio.gather(*(self._supervise(run, c) for c in run.containers if not c.init))
        self._publish(run)
        await self._stop_holder(run)  # the sandbox goes with the last container, as in Kubernetes
        self._release_ip(run)  # a finished pod keeps its podIP in status only, as in Kubernetes

    async def _supervise(self, run, c):
        """Run a container until restartPolicy says it is done; True if it ended with exit 0."""
        policy = run.pod["spec"].get("restartPolicy", "Always")
        backoff = self.backoff_base
        while True:
            try:
                view = self._view(run, c)
            except ConfigError as e:
                c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
                self._event(run, "Failed", f"Error: {e}", "Warning")
                self._publish(run)
                await asyncio.sleep(self.retry_delay)
                continue
            began = time.monotonic()
            code = await self._run_once(run, c, view)
            if c.init:
                restart = code != 0 and policy != "Never"
            else:
                restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            if not restart:
                c.done = True
                self._publish(run)
                return code == 0
            if time.monotonic() - began > self.backoff_reset:
                backoff = self.backoff_base
            delay, backoff = backoff, min(backoff * 2, self.backoff_max)
            c.last_state = c.state
            c.state = {"waiting": {"reason": "CrashLoopBackOff", "message":
                       f"back-off {_go_duration(delay)} restarting failed container={c.name} pod={run.ref}"}}
            self._event(run, "BackOff", f"Back-off restarting failed container {c.name} in pod {run.ref}", "Warning")
            self._publish(run)
            await asyncio.sleep(delay)
            c.restart_count += 1

    async def _run_once(self, run, c, view):
        """Start one instance of a container and wait for it to exit; its exit code."""
        c.container_id = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
        logfile = run.sandbox.log_file(c.name)
        logfile.parent.mkdir(parents=True, exist_ok=True)
        if logfile.exists():
            os.replace(logfile, run.sandbox.log_file(c.name, previous=True))
        self._event(run, "Pulled", f'Container image "{c.spec["image"]}" already present on machine')
        self._event(run, "Created", f"Created container {c.name}")
        started = isotime()
        error = None
        if not view.argv:
            error = "no command specified"
        elif view.executable is None:
            error = f'exec: "{view.argv[0]}": executable file not found in $PATH'
        else:
            c.spawning = asyncio.create_task(self._spawn(run, c, view, logfile))
            try:
                c.proc = await asyncio.shield(c.spawning)
            except OSError as e:
                error = f'exec: "{view.argv[0]}": {(e.strerror or str(e)).lower()}'
            except subprocess.SubprocessError as e:  # entering the pod failed (it is going away)
                error = f"entering the pod: {e}"
        if error:
            message = (f"failed to create containerd task: failed to create shim task: OCI runtime create "
                       f"failed: runc create failed: unable to start container process: {error}: unknown")
            self._event(run, "Failed", f"Error: {message}", "Warning")
            c.state = {"terminated": {"exitCode": 128, "reason": "StartError", "message": message,
                                      "startedAt": "1970-01-01T00:00:00Z", "finishedAt": isotime(),
                                      "containerID": f"containerd://{c.container_id}"}}
            self._publish(run)
            return 128
        c.state = {"running": {"startedAt": started}}
        self._event(run, "Started", f"Started container {c.name}")
        self._publish(run)
        returncode = await c.proc.wait()
        # The container's other processes go with it, as when a container's cgroup is torn down.
        await self._kill_leftovers(run, c)
        code = returncode if returncode >= 0 else 128 - returncode
        term = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": started,
                "finishedAt": isotime(), "containerID": f"containerd://{c.container_id}"}
        if returncode < 0:
            term["signal"] = -returncode
        c.state = {"terminated": term}
        self._publish(run)
        return code

    async def _spawn(self, run, c, view, logfile):
        env = {**view.env, MARKER: f"{run.marker_prefix()}{c.marker}"}
        if run.holder is not None:
            cwd, preexec = None, functools.partial(_enter_pod, os.getpid(), run.holder.pid, str(view.cwd),
                                                   _privileged(c.spec))
        else:
            cwd, preexec = view.cwd, functools.partial(_die_with_parent, os.getpid())
        out = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            return await asyncio.create_subprocess_exec(
                *view.argv, executable=view.executable, env=env, cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                preexec_fn=preexec)
        finally:
            os.close(out)

    # -- stopping ------------------------------------------------------------------------------

    def _shutdown(self, run, grace, remove=False, record=True):
        """Stop a pod's containers (at most ``grace`` seconds for SIGTERM), free its address and
        sandbox, and with ``remove`` delete the pod from the store. Idempotent; a shorter grace
        period cuts a running shutdown short. Returns the shutdown task."""
        if run.terminating is None:
            run.terminating = asyncio.create_task(self._terminate(run, grace, remove, record))
        if grace == 0:
            run.kill_now.set()
        return run.terminating

    async def _terminate(self, run, grace, remove, record):
        if run.driver:
            # A cancel that lands while a container start is finishing can be absorbed on the way
            # (the start is shielded, and a failed start is a restart); the driver then goes on to
            # its back-off sleep. Cancel again until it has ended.
            while not run.driver.done():
                run.driver.cancel()
                await asyncio.wait([run.driver], timeout=1)
        await asyncio.gather(*(self._stop_container(run, c, grace, record) for c in run.containers))
        await self._stop_holder(run)
        if self.runs.get((run.namespace, run.name)) is run:
            del self.runs[(run.namespace, run.name)]
        self._release_ip(run)
        if remove:
            pod = self.store.find(self.pods, run.namespace, run.name)
            if pod and pod["metadata"]["uid"] == run.uid:
                self.store.remove(self.pods, run.namespace, run.name)
        await asyncio.to_thread(run.sandbox.remove)

    async def _stop_container(self, run, c, grace, record):
        if c.spawning:
            await asyncio.wait([c.spawning])  # a process being started is stopped once it exists
            if not c.spawning.cancelled() and c.spawning.exception() is None:
                c.proc = c.spawning.result()
        proc = c.proc
        if proc is not None and proc.returncode is None:
            if record:
                self._event(run, "Killing", f"Stopping container {c.name}")
            _kill([proc.pid], signal.SIGTERM)
            exited = asyncio.ensure_future(proc.wait())
            urgent = asyncio.ensure_future(run.kill_now.wait())
            await asyncio.wait({exited, urgent}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            urgent.cancel()
            await self._kill_leftovers(run, c)
            await exited
        elif c.container_id:
            await self._kill_leftovers(run, c)

    async def _kill_leftovers(self, run, c):
        """SIGKILL every process of the container: its process group and everything marked as its."""
        if c.proc is not None:
            try:
                os.killpg(c.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        _kill(await asyncio.to_thread(_marked_pids, f"{run.marker_prefix()}{c.marker}"))

    # -- reporting -----------------------------------------------------------------------------

    def _event(self, run, reason, message, type_="Normal"):
        try:
            events.record(self.store, run.pod, reason, message, type_, component="kubelet", host=run.node)
        except ApiError:
            pass  # the namespace is going away: nobody will read it

    def _publish(self, run):
        """Write the pod's status as the kubelet sees it now (unless the pod is going away)."""
        if run.terminating is not None:
            return
        now = isotime()

        def update(pod):
            if pod["metadata"]["uid"] != run.uid:
                return
            status = pod.setdefault("status", {})
            phase = run.phase()
            mains = [c for c in run.containers if not c.init]
            inits = [c for c in run.containers if c.init]
            unready = [c.name for c in mains if "running" not in c.state]
            ready = phase == "Running" and not unready
            old = {cond["type"]: cond for cond in status.get("conditions", [])}

            def cond(type_, ok, reason=None, message=None):
                value = "True" if ok else "False"
                prev = old.get(type_)
                out = {"type": type_, "status": value, "lastProbeTime": None,
                       "lastTransitionTime": prev["lastTransitionTime"] if prev and prev["status"] == value else now}
                if not ok and reason:
                    out["reason"] = reason
                    if message:
                        out["message"] = message
                return out

            completed = phase in ("Succeeded", "Failed")
            not_ready = ("PodCompleted", None) if completed else (
                "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]")
            ours = [
                cond("PodReadyToStartContainers", run.sandbox_ready),
                cond("Initialized", run.init_done, "ContainersNotInitialized",
                     f"containers with incomplete status: [{' '.join(c.name for c in inits if not c.done)}]"),
                cond("Ready", ready, *not_ready),
                cond("ContainersReady", ready, *not_ready),
            ]
            mine = {c["type"] for c in ours}
            status["conditions"] = ours + [c for c in status.get("conditions", []) if c["type"] not in mine]
            status.update({
                "phase": phase,
                "hostIP": self.host_ip, "hostIPs": [{"ip": self.host_ip}],
                "podIP": run.ip, "podIPs": [{"ip": run.ip}],
                "startTime": run.start_time,
                "containerStatuses": [c.status() for c in mains],
            })
            if inits:
                status["initContainerStatuses"] = [c.status() for c in inits]

        self.store.mutate(self.pods, run.namespace, run.name, update, subresource="status")
