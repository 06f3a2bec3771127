"""The pod network: a bridge of localkube's own, a pod CIDR and a service CIDR (or loopback).

Two modes, chosen once per localkube (``LOCALKUBE_ISOLATION`` or ``--isolation``):

- ``isolated`` (the default as root): every pod gets network, UTS, IPC and mount namespaces of
  its own (:mod:`.holder` keeps them), joined to a bridge ``lk<id>`` by a veth pair. The host
  holds the gateway address (the pod CIDR's first address, as a /32) on the bridge; each pod
  gets a /32 route on the host through the bridge, and the whole pod and service ranges get
  ``unreachable`` routes (a high metric, so a pod's /32 wins): traffic from the host to an
  address no pod holds fails at once instead of following the default route off the machine.
  IP forwarding stays off on the bridge, so pods reach each other (bridged) and the host's
  addresses, nothing beyond (what a pod sends elsewhere is dropped: it times out). A Service
  address the host takes as its own (``ip addr add <ip>/32 dev <bridge>``: the local table wins
  over the unreachable route) is reachable from pods and host alike.
- ``loopback`` (the fallback without root): one address per pod from ``127.1.0.0/16`` on the
  host's loopback; no namespaces (see README "Deviations").

Ranges: /22 pod and /24 service blocks carved from ``100.64.0.0/10`` (shared address space, never
routed on the Internet nor used by home networks), the first block clashing with no route or
address of this machine and no other live localkube; or given explicitly. Each isolated localkube
records ``{pid, start time, bridge, ranges, state_dir}`` in ``/run/localkube/<bridge>.json``; a
start removes what a localkube whose recorded process is gone left behind (its bridge, routes and
pod processes; namespaces, veths and mounts die with the pod processes that hold them).

Contract for the Services and exec/port-forward code (keep it stable):

- ``PodNetwork.isolated`` (bool), ``.bridge`` (str, None in loopback mode), ``.gateway_ip`` (str:
  the host's address as pods reach it; ``127.0.0.1`` in loopback mode), ``.pod_cidr`` and
  ``.service_cidr`` (``ipaddress.IPv4Network``; the service CIDR is allocated from in both modes).
- ``Kubelet.enter(namespace, pod_name, container) -> (env, cwd, preexec_fn)``: run a process in
  the container (isolated: pass ``cwd=None`` to subprocess, ``preexec_fn`` enters the pod and
  changes dir; LookupError when the pod or container is not running).
- ``<kubeconfig>.network.json`` (``network_file()``): ``PodNetwork.info()`` for other processes
  (``LocalKubeProcess.network``/``.gateway_ip``). Pods' resolv.conf names ``gateway_ip`` port 53.
- ``await Kubelet.open_connection(namespace, pod_name, port) -> (reader, writer)``: a TCP
  connection to ``127.0.0.1:port`` inside the pod's network namespace.
"""

import asyncio
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import random
import secrets
import shutil
from pathlib import Path

log = logging.getLogger("localkube")

RUN_DIR = Path("/run/localkube")
SHARED_RANGE = ipaddress.ip_network("100.64.0.0/10")
LOOPBACK_RANGE = "127.1.0.0/16"
UNREACHABLE_METRIC = 4242  # above the /32 routes of pods (metric 0)
ISOLATION_ENV = "LOCALKUBE_ISOLATION"


class NetworkError(Exception):
    """The network could not be set up (an `ip` command failed, no free range)."""


def choose_isolation(requested=None):
    """``"isolated"`` or ``"loopback"``: the request, else ``$LOCALKUBE_ISOLATION``, else isolated
    where it can work (root, iproute2's ``ip`` installed)."""
    mode = requested or os.environ.get(ISOLATION_ENV)
    if mode is None:
        if os.geteuid() == 0 and shutil.which("ip") is None:
            log.warning("running as root without iproute2's `ip`: pods fall back to loopback addresses "
                        "(install iproute2 for pods isolated in namespaces of their own)")
        return "isolated" if os.geteuid() == 0 and shutil.which("ip") else "loopback"
    if mode not in ("isolated", "loopback"):
        raise ValueError(f"isolation must be 'isolated' or 'loopback', not {mode!r}")
    if mode == "isolated" and (os.geteuid() != 0 or shutil.which("ip") is None):
        raise ValueError("isolation 'isolated' needs root and iproute2's `ip` (namespaces, a bridge); "
                         "use 'loopback'")
    return mode


async def ip(*args, stdin=None, check=True):
    """Run ``ip`` (iproute2) without blocking the loop; its stderr, raising NetworkError if asked."""
    proc = await asyncio.create_subprocess_exec(
        "ip", *args, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    except asyncio.CancelledError:
        # Cancelled (a pod deleted while it is set up): stop here, so that whoever cleans up after
        # us does not race an `ip` still adding what they are removing.
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if check and proc.returncode:
        raise NetworkError(f"ip {' '.join(args)}: {err.decode().strip()}")
    return err.decode()


def _start_time(pid):
    """A process's start time in clock ticks (tells a live PID from a reused one); None if gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _json(text):
    return json.loads(text) if text.strip() else []


class PodNetwork:
    """Addresses for pods and, when isolated, the bridge and routes they hang on."""

    def __init__(self, state_dir, isolation=None, pod_cidr=None, service_cidr=None):
        self.state_dir = Path(state_dir).absolute()
        self.isolated = choose_isolation(isolation) == "isolated"
        self._wanted = (pod_cidr, service_cidr)
        self.bridge = None
        self.gateway_ip = "127.0.0.1"
        self.pod_cidr = ipaddress.ip_network(pod_cidr or LOOPBACK_RANGE)
        self.service_cidr = ipaddress.ip_network(service_cidr or "10.96.0.0/16")
        self._record = None
        self._ips = {}  # address -> uid of the pod holding it
        self._veths = 0
        # Loopback is shared by every localkube on the machine: a random start keeps two apart.
        self._next = 2 if self.isolated else random.randrange(1, self.pod_cidr.num_addresses - 1)
        self.started = not self.isolated  # loopback needs nothing set up

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self):
        """Create the bridge and routes (isolated), after removing what dead localkubes left."""
        if self.started:
            return self
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        async with self._locked():
            await self._sweep()
            await self._claim()
        try:
            await self._create()
        except BaseException:
            await self.stop()
            raise
        self.started = True
        log.info("pod network: %s", self.info())
        return self

    async def stop(self):
        """Remove the bridge, the routes and the record (pods must be gone already)."""
        if self._record is None:
            return
        await _remove(self._record)
        self._record = None
        self.started = False

    def info(self):
        """What clients of this localkube need to know (written next to the kubeconfig)."""
        return {"isolation": "isolated" if self.isolated else "loopback", "bridge": self.bridge,
                "gateway_ip": self.gateway_ip, "pod_cidr": str(self.pod_cidr),
                "service_cidr": str(self.service_cidr)}

    @contextlib.asynccontextmanager
    async def _locked(self):
        """One localkube at a time chooses ranges (held for a few `ip` calls; waited for in a thread)."""
        with open(RUN_DIR / "lock", "a") as f:
            await asyncio.to_thread(fcntl.flock, f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    async def _sweep(self):
        """Remove bridges, routes and pod processes of localkubes whose process is gone."""
        for path in RUN_DIR.glob("lk*.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if _start_time(record["pid"]) == record.get("start_time"):
                continue  # alive
            log.info("removing what a dead localkube (pid %s) left: %s", record["pid"], record["bridge"])
            from .kubelet import kill_marked

            await asyncio.to_thread(kill_marked, f"{record['state_dir']}/pods/")
            await _remove(record)

    async def _claim(self):
        """Pick the bridge name and ranges and record them before creating anything."""
        taken = await self._taken_ranges()
        if self._wanted[0]:
            pod = ipaddress.ip_network(self._wanted[0])
            service = ipaddress.ip_network(self._wanted[1] or next(self._blocks([*taken, pod], need_pod=False)))
            for net in (pod, service):
                if any(net.overlaps(t) for t in taken):
                    raise NetworkError(f"{net} overlaps a route of this machine or another localkube")
        else:
            try:
                pod, service = next(self._blocks(taken))
            except StopIteration:
                raise NetworkError(f"no free /21 left in {SHARED_RANGE}") from None
            if self._wanted[1]:
                service = ipaddress.ip_network(self._wanted[1])
        self.pod_cidr, self.service_cidr = pod, service
        self.gateway_ip = str(pod.network_address + 1)
        self.bridge = f"lk{secrets.token_hex(3)}"
        self._record = {"pid": os.getpid(), "start_time": _start_time(os.getpid()), "bridge": self.bridge,
                        "pod_cidr": str(pod), "service_cidr": str(service), "state_dir": str(self.state_dir)}
        (RUN_DIR / f"{self.bridge}.json").write_text(json.dumps(self._record))

    @staticmethod
    def _blocks(taken, need_pod=True):
        """Free (pod /22, service /24) pairs: one /21 of the shared range each."""
        for block in SHARED_RANGE.subnets(new_prefix=21):
            if not any(block.overlaps(t) for t in taken):
                pod = next(block.subnets(new_prefix=22))
                service = ipaddress.ip_network(f"{pod.network_address + 1024}/24")
                yield (pod, service) if need_pod else service

    async def _taken_ranges(self):
        routes = _json(await _ip_json("route", "show", "table", "all"))
        addrs = _json(await _ip_json("addr", "show"))
        taken = []
        for r in routes:
            dst = r.get("dst")
            if dst and dst != "default" and ":" not in dst:
                with contextlib.suppress(ValueError):
                    taken.append(ipaddress.ip_network(dst, strict=False))
        for link in addrs:
            for a in link.get("addr_info", []):
                if a.get("family") == "inet":
                    taken.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
        for path in RUN_DIR.glob("lk*.json"):  # claimed, maybe not routed yet
            with contextlib.suppress(OSError, ValueError, KeyError):
                record = json.loads(path.read_text())
                taken += [ipaddress.ip_network(record["pod_cidr"]), ipaddress.ip_network(record["service_cidr"])]
        return taken

    async def _create(self):
        br, gw = self.bridge, self.gateway_ip
        await ip("-batch", "-", stdin="\n".join([
            f"link add {br} type bridge",
            f"addr add {gw}/32 dev {br}",
            f"link set {br} up",
            f"route add unreachable {self.pod_cidr} metric {UNREACHABLE_METRIC}",
            f"route add unreachable {self.service_cidr} metric {UNREACHABLE_METRIC}",
        ]) + "\n")
        # Nothing received on the bridge is forwarded off it (pods have no route off the machine);
        # no IPv6 on it either (pods are IPv4 only).
        for key, value in ((f"ipv4/conf/{br}/forwarding", "0"), (f"ipv6/conf/{br}/disable_ipv6", "1")):
            with contextlib.suppress(OSError):
                Path("/proc/sys/net", key).write_text(value)

    # -- addresses ---------------------------------------------------------------------------

    def allocate(self, uid):
        """A free pod address, round robin so a freed one is reused last."""
        first = 2 if self.isolated else 1  # .1 is the gateway
        size = self.pod_cidr.num_addresses - 1 - first
        for _ in range(size):
            offset = first + (self._next - first) % size
            self._next = offset + 1
            candidate = str(self.pod_cidr.network_address + offset)
            if candidate not in self._ips:
                self._ips[candidate] = uid
                return candidate
        raise NetworkError(f"pod network {self.pod_cidr} has no free address")

    def release(self, address, uid):
        if self._ips.get(address) == uid:
            del self._ips[address]

    def holds(self, address):
        return address in self._ips

    # -- pods ----------------------------------------------------------------------------------

    def new_veth(self):
        """A name for a pod's host-side veth: known before :meth:`attach` runs, so that a pod
        deleted half-way through is detached all the same."""
        self._veths += 1
        return f"{self.bridge}v{self._veths:x}"

    async def attach(self, pid, address, veth):
        """Join the network namespace of process ``pid`` to the bridge as ``eth0`` at ``address``.

        Host side only (the veth ``veth``, the /32 route); the pod configures its end (:mod:`.holder`).
        Whether it fails or is cancelled, :meth:`detach` removes what it made.
        """
        await ip("-batch", "-", stdin="\n".join([
            f"link add {veth} type veth peer name eth0 netns {pid}",
            f"link set {veth} master {self.bridge} up",
            f"route add {address}/32 dev {self.bridge} src {self.gateway_ip}",
        ]) + "\n")

    async def detach(self, address, veth):
        """Remove a pod's route (and its veth, if its namespace still exists)."""
        await ip("route", "del", f"{address}/32", "dev", self.bridge, check=False)
        if veth:
            await ip("link", "del", veth, check=False)


def network_file(kubeconfig):
    """Where localkube describes its network (:meth:`PodNetwork.info`), next to its kubeconfig."""
    kubeconfig = Path(kubeconfig)
    return kubeconfig.with_name(kubeconfig.name + ".network.json")


def read_network_file(kubeconfig):
    """The network a localkube wrote next to ``kubeconfig``; None if there is none (no localkube)."""
    try:
        return json.loads(network_file(kubeconfig).read_text())
    except (OSError, ValueError):
        return None


async def _ip_json(*args):
    proc = await asyncio.create_subprocess_exec("ip", "-j", *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate()
    return out.decode()


async def _remove(record):
    """Delete a recorded bridge (its veths and routes go with it), unreachable routes, the record."""
    await ip("link", "del", record["bridge"], check=False)
    for key in ("pod_cidr", "service_cidr"):
        await ip("route", "del", "unreachable", record[key], "metric", str(UNREACHABLE_METRIC), check=False)
    with contextlib.suppress(FileNotFoundError):
        (RUN_DIR / f"{record['bridge']}.json").unlink()
