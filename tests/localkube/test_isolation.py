"""Nothing of an isolated localkube outlives it: not after stop(), not after a SIGKILL.

A running pod holds a network namespace, a veth on localkube's bridge, a mount namespace with its
overlay and volume mounts, and processes. After localkube is SIGKILLed and started again on the
same state directory, none of that may remain; after a clean stop (pods still running), not even
the bridge.
"""

import asyncio
import json
import os
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from crater_hub.localkube import LocalKube, LocalKubeProcess
from crater_hub.localkube.kubelet import log_path
from crater_hub.localkube.network import RUN_DIR, PodNetwork
from tests.helpers import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="isolated pods need root (namespaces, a bridge)")


def api(cluster, path, body=None):
    request = urllib.request.Request(cluster.url + path, method="POST" if body else "GET",
                                     data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as r:
        return json.loads(r.read())


def pids_mentioning(text):
    """PIDs whose environment or command line contains ``text`` (pod processes carry the
    kubelet's marker, which names their sandbox under the state directory)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            data = Path(entry.path, "environ").read_bytes() + Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in data:
            found.append(int(entry.name))
    return found


def namespaces_in_use():
    """Every (kind, inode) of a net or mnt namespace some process is in."""
    seen = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            for kind in ("net", "mnt"):
                try:
                    seen.add(os.readlink(f"/proc/{entry.name}/ns/{kind}"))
                except OSError:
                    pass
    return seen


def links():
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {link["ifname"] for link in json.loads(out)}


def routes():
    return subprocess.run(["ip", "route", "show"], capture_output=True, text=True, check=True).stdout


def mount_lines(text):
    """Lines of any process's mount table naming ``text`` (mounts outlive nothing they name)."""
    lines = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                lines |= {line for line in Path(entry.path, "mountinfo").read_text().splitlines() if text in line}
            except OSError:
                pass
    return lines


def sleeper(name):
    return {"metadata": {"name": name}, "spec": {
        "volumes": [{"name": "scratch", "emptyDir": {}}],
        "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "sleep 3600"],
                        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}]}}


def running_pod(cluster, name):
    pod = api(cluster, f"/api/v1/namespaces/default/pods/{name}")
    return pod if pod["status"].get("phase") == "Running" else None


async def test_a_sigkilled_localkube_leaves_nothing_after_the_next_start(tmp_path):
    state = tmp_path / "state"
    first = LocalKubeProcess(state, tie_to_parent=True, extra_args=["--isolation", "isolated"]).start()
    try:
        bridge, ranges = first.network["bridge"], (first.network["pod_cidr"], first.network["service_cidr"])
        assert bridge in links() and all(r in routes() for r in ranges)
        api(first, "/api/v1/namespaces/default/pods", sleeper("sleepy"))
        await wait_for(lambda: running_pod(first, "sleepy"), timeout=30, message="sleepy running")
        pod_pids = await wait_for(lambda: pids_mentioning(f"{state.absolute()}/pods/"), message="pod processes")
        pod_namespaces = {os.readlink(f"/proc/{pid}/ns/{kind}") for pid in pod_pids for kind in ("net", "mnt")}
        veths = {name for name in links() if name.startswith(bridge) and name != bridge}
        assert veths and pod_namespaces and mount_lines(str(state.absolute()))

        os.kill(first.proc.pid, signal.SIGKILL)
        first.proc.wait()
    finally:
        first.stop()

    second = LocalKubeProcess(state, tie_to_parent=True, extra_args=["--isolation", "isolated"]).start()
    try:
        await wait_for(lambda: not pids_mentioning(f"{state.absolute()}/pods/"), timeout=5,
                       message="the dead localkube's pod processes gone")
        assert not pod_namespaces & namespaces_in_use()  # network and mount namespaces
        assert bridge not in links() and not veths & links()
        new_bridge = second.network["bridge"]
        new_ranges = (second.network["pod_cidr"], second.network["service_cidr"])
        for r in ranges:  # its unreachable routes (the new one may well reuse the freed ranges)
            assert routes().count(f"unreachable {r} ") == (r in new_ranges)
        assert not mount_lines(str(state.absolute() / "pods"))
        assert not (RUN_DIR / f"{bridge}.json").exists()
        assert new_bridge in links()
        api(second, "/api/v1/namespaces/default/pods", sleeper("again"))
        await wait_for(lambda: running_pod(second, "again"), timeout=30, message="again running")
        new_pids = pids_mentioning(f"{state.absolute()}/pods/")
        assert new_pids
        new_namespaces = {os.readlink(f"/proc/{pid}/ns/{kind}") for pid in new_pids for kind in ("net", "mnt")}
    finally:
        second.stop()
    # A clean stop leaves nothing either, the bridge and its record included.
    assert not pids_mentioning(f"{state.absolute()}/pods/")
    assert not new_namespaces & namespaces_in_use()
    assert not [name for name in links() if name.startswith(new_bridge)]
    assert not (RUN_DIR / f"{new_bridge}.json").exists()
    assert not any(r in routes() for r in new_ranges)


@pytest.fixture
def state_on_overlay(tmp_path):
    """A state directory on an overlay mount: a filesystem that cannot host an overlay upper."""
    for d in ("lower", "upper", "work", "state"):
        (tmp_path / d).mkdir()
    state = tmp_path / "state"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={tmp_path / 'lower'},upperdir={tmp_path / 'upper'},workdir={tmp_path / 'work'}",
                    str(state)], check=True)
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], check=True)


async def test_pod_writes_go_to_a_tmpfs_when_the_upper_layer_cannot_be_an_overlay_upper(state_on_overlay, caplog):
    lk = LocalKube(state_dir=state_on_overlay, isolation="isolated")
    await lk.start()
    try:
        pods = lk.registry.lookup("", "v1", "pods")
        script = "echo mine > /var/tmp/private-note && cat /var/tmp/private-note && sleep 3600"
        lk.store.create(pods, {"metadata": {"name": "fallback"}, "spec": {"containers": [
            {"name": "main", "image": "busybox", "command": ["sh", "-c", script]}]}}, "default")
        pod = await wait_for(lambda: (p := lk.store.find(pods, "default", "fallback"))
                             and p["status"].get("phase") == "Running" and p, timeout=30)
        log = log_path(lk, pod, "main")
        await wait_for(lambda: log.exists() and log.read_text() == "mine\n", timeout=10)
        sandbox = log.parents[2]
        assert not list((sandbox / "upper").rglob("private-note"))  # in the tmpfs, not on disk
        assert not os.path.exists("/var/tmp/private-note")
        assert any("cannot host an overlay" in r.getMessage() for r in caplog.records)
    finally:
        await lk.stop()


async def test_localkubes_started_together_get_their_own_bridge_and_ranges(tmp_path):
    networks = [PodNetwork(tmp_path / f"s{i}", isolation="isolated") for i in range(3)]
    await asyncio.gather(*(n.start() for n in networks))
    try:
        ranges = [r for n in networks for r in (n.pod_cidr, n.service_cidr)]
        assert len({n.bridge for n in networks}) == 3
        assert not any(a.overlaps(b) for i, a in enumerate(ranges) for b in ranges[i + 1:])
        assert all(n.bridge in links() for n in networks)
    finally:
        await asyncio.gather(*(n.stop() for n in networks))
    assert not any(n.bridge in links() for n in networks)


async def test_a_start_that_fails_after_the_network_is_up_leaves_no_bridge_routes_or_record(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    lk = LocalKube(state_dir=tmp_path / "state", isolation="isolated", port=taken.getsockname()[1])
    try:
        with pytest.raises(OSError):
            await lk.start()  # the API's port is taken: after the bridge is made
    finally:
        taken.close()
    bridge, ranges = lk.network.bridge, (str(lk.network.pod_cidr), str(lk.network.service_cidr))
    assert bridge and bridge not in links()
    assert not (RUN_DIR / f"{bridge}.json").exists()
    assert not any(f"unreachable {r} " in routes() for r in ranges)


async def test_a_pod_deleted_while_its_veth_is_attached_leaves_no_route_for_the_next_pod(tmp_path):
    lk = LocalKube(state_dir=tmp_path / "state", isolation="isolated")
    await lk.start()
    try:
        attached = asyncio.Event()
        real_attach = lk.network.attach

        async def attach_then_hold(*args):  # the deletion arrives while attach is still running
            await real_attach(*args)
            attached.set()
            await asyncio.Event().wait()

        lk.network.attach = attach_then_hold
        pods = lk.registry.lookup("", "v1", "pods")
        kubelet = next(c for c in lk.controllers if hasattr(c, "enter"))
        lk.store.create(pods, sleeper("doomed"), "default")
        await asyncio.wait_for(attached.wait(), 30)
        ip = lk.store.find(pods, "default", "doomed")["status"]["podIP"]
        assert f"{ip} dev {lk.network.bridge} " in routes()
        await asyncio.to_thread(api_delete, lk, "/api/v1/namespaces/default/pods/doomed?gracePeriodSeconds=0")
        await wait_for(lambda: not kubelet.runs and not lk.store.find(pods, "default", "doomed"),
                       timeout=10, message="doomed gone")
        assert f"{ip} dev {lk.network.bridge} " not in routes()
    finally:
        await lk.stop()


def api_delete(lk, path):
    with urllib.request.urlopen(urllib.request.Request(lk.url + path, method="DELETE"), timeout=5) as r:
        return json.loads(r.read())
