"""Which pod network a localkube picks, and the ranges it may not take."""

import ipaddress
import os

import pytest

from crater_hub.localkube.network import ISOLATION_ENV, PodNetwork, choose_isolation


def test_the_switch_and_the_default(monkeypatch):
    monkeypatch.delenv(ISOLATION_ENV, raising=False)
    assert choose_isolation() == ("isolated" if os.geteuid() == 0 else "loopback")
    monkeypatch.setenv(ISOLATION_ENV, "loopback")
    assert choose_isolation() == "loopback"
    assert choose_isolation("loopback") == "loopback"
    with pytest.raises(ValueError, match="'isolated' or 'loopback'"):
        choose_isolation("bridged")


def test_without_iproute2_root_falls_back_and_isolated_is_refused(monkeypatch):
    monkeypatch.delenv(ISOLATION_ENV, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert choose_isolation() == "loopback"
    with pytest.raises(ValueError, match="needs root and iproute2"):
        choose_isolation("isolated")


def test_blocks_skip_whatever_is_taken():
    taken = [ipaddress.ip_network("100.64.0.0/16"), ipaddress.ip_network("100.65.0.0/21")]
    pod, service = next(PodNetwork._blocks(taken))
    assert (str(pod), str(service)) == ("100.65.8.0/22", "100.65.12.0/24")
    assert not any(pod.overlaps(t) or service.overlaps(t) for t in taken)


def test_loopback_addresses_are_handed_out_once(tmp_path):
    net = PodNetwork(tmp_path, isolation="loopback")
    first, second = net.allocate("a"), net.allocate("b")
    assert first != second and all(ipaddress.ip_address(a) in net.pod_cidr for a in (first, second))
    net.release(first, "someone-else")
    assert net.holds(first)
    net.release(first, "a")
    assert not net.holds(first)
