"""The idle rule of ``lifetime: "idle"`` Ray clusters (:func:`crater_hub.ray.idle.decide`), the
request field that chooses it, and the config that bounds it."""

import pytest
from traitlets import TraitError

from crater_hub.config import Crater
from crater_hub.policy.workload import PolicyError
from crater_hub.ray import idle, options

T0 = 1_800_000_000.0  # the cluster's creation
RULE = {"idle_timeout": 600, "max_lifetime": 3600, "warning": 120}


def decide(now, last=None, busy=False, **rule):
    return idle.decide(T0 + now, T0, None if last is None else T0 + last, busy, **{**RULE, **rule})


def test_an_unused_cluster_is_kept_then_warned_then_deleted_counting_from_its_creation():
    assert decide(0).action == idle.KEEP
    assert decide(479).action == idle.KEEP
    assert decide(480).action == idle.WARN  # 120 s before the idle deadline
    verdict = decide(600)
    assert verdict.action == idle.DELETE and verdict.reason == "idle"
    assert verdict.expires_at == verdict.idle_deadline == T0 + 600


def test_the_last_use_moves_the_deadline():
    assert decide(700, last=300).action == idle.KEEP
    assert decide(780, last=300).action == idle.WARN
    assert decide(900, last=300).action == idle.DELETE
    assert decide(900, last=300).idle_deadline == T0 + 900


def test_a_busy_cluster_running_jobs_is_never_idle_but_the_hard_maximum_still_deletes_it():
    assert decide(2000, last=100, busy=True).action == idle.KEEP
    warned = decide(3500, busy=True)
    assert warned.action == idle.WARN and warned.reason == "max_lifetime"
    assert warned.expires_at == T0 + 3600 and warned.idle_deadline == T0 + 4100
    assert decide(3600, busy=True).action == idle.DELETE


def test_no_hard_maximum_when_it_is_zero():
    verdict = decide(10 * 86400, busy=True, max_lifetime=0)
    assert verdict.action == idle.KEEP and verdict.reason == "idle"


def test_a_last_use_before_the_creation_counts_as_the_creation():
    assert decide(599, last=-500).action == idle.WARN
    assert decide(599, last=-500).idle_deadline == T0 + 600


def test_a_warning_longer_than_the_idle_time_warns_from_the_start():
    assert decide(0, warning=10_000).action == idle.WARN


def test_an_idle_warning_shows_once_the_hub_has_looked_at_the_jobs_a_maximum_one_at_once():
    warned = decide(500)
    assert not idle.shown_warning(warned, looked=False)  # a job may have run while the hub was down
    assert idle.shown_warning(warned, looked=True)
    assert idle.shown_warning(decide(650), looked=True)  # due for deletion: warned until it goes
    at_maximum = decide(3500, busy=True)
    assert at_maximum.reason == "max_lifetime" and idle.shown_warning(at_maximum, looked=False)
    assert not idle.shown_warning(decide(100), looked=True)


def test_timestamps_read_as_kubernetes_writes_them():
    assert idle.epoch("2027-01-15T08:00:00Z") == idle.epoch("2027-01-15T08:00:00+00:00")
    assert idle.iso(idle.epoch("2027-01-15T08:00:00Z")) == "2027-01-15T08:00:00Z"
    assert idle.epoch("") is None and idle.epoch("yesterday") is None


def test_lifetime_idle_is_a_choice_and_takes_no_server():
    assert options.parse({"lifetime": "idle"}, 8).lifetime == "idle"
    with pytest.raises(PolicyError, match="lifetime must be one of: server, idle"):
        options.parse({"lifetime": "forever"}, 8)
    with pytest.raises(PolicyError, match="server applies to lifetime 'server' only"):
        options.parse({"lifetime": "idle", "server": ""}, 8)


@pytest.mark.parametrize("trait, value", [("ray_idle_timeout", 5), ("ray_idle_timeout", 400 * 86400),
                                          ("ray_max_lifetime", -1), ("ray_idle_warning", -5)])
def test_bad_lifetime_config_is_refused_naming_the_setting(trait, value):
    with pytest.raises(TraitError, match=f"Crater.{trait} must be a number of seconds"):
        Crater(**{trait: value})
