"""Profiles, options validation, quotas and pod shaping, as data: what a spawn would be refused for."""

import pytest
from traitlets import TraitError
from traitlets.config import Config

from crater_hub.accelerators import Accelerator
from crater_hub.config import Crater
from crater_hub.policy import quotas
from crater_hub.policy import workload as options
from crater_hub.policy.workload import PolicyError
from crater_hub.spawner import shaping

A100 = Accelerator("a100", "A100 80GB", "nvidia.com/gpu", {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
                   ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},), "80Gi")
T4 = Accelerator("t4", "Tesla T4", "nvidia.com/gpu", {"nvidia.com/gpu.product": "NVIDIA-Tesla-T4"})
CATALOG = {"a100": A100, "t4": T4}
PROFILES = [
    {"slug": "cpu", "display_name": "CPU", "default": True, "cpu": {"guarantee": 1, "limit": 2},
     "memory": {"guarantee": "1Gi", "limit": "2Gi"}},
    {"slug": "gpu", "display_name": "GPU", "images": [
        {"slug": "torch", "image": "pytorch:1"}, {"slug": "secret", "image": "s:1", "allowed_groups": ["ml-staff"]}],
     "accelerators": [{"accelerator": "t4", "counts": [1, 2]},
                      {"accelerator": "a100", "counts": [1, 2, 4], "allowed_groups": ["ml-staff"]}],
     "allow_cpu_only": True},
    {"slug": "staff", "allowed_groups": ["ml-staff"], "accelerators": [{"accelerator": "a100", "counts": [4]}]},
]


def crater(**traits):
    c = Config()
    c.Crater.accelerators = [{"slug": a.slug, "resource": a.resource, "node_selector": a.node_selector}
                             for a in CATALOG.values()]
    c.Crater.profiles = PROFILES
    for k, v in traits.items():
        setattr(c.Crater, k, v)
    return Crater(config=c)


def resolve(user_options, user="ada", groups=()):
    return options.resolve(user_options, crater().profile_list(), user, groups, CATALOG)


def test_default_profile_and_choices():
    spec = resolve({})
    assert (spec.profile, spec.accelerator, spec.gpus, spec.cpu_limit, spec.mem_limit) == ("cpu", None, 0, 2.0, "2Gi")
    spec = resolve({"profile": "gpu", "gpus": "2"})
    assert (spec.accelerator.slug, spec.gpus, spec.image) == ("t4", 2, "pytorch:1")


@pytest.mark.parametrize("user_options, status, fragment", [
    ({"profile": "nope"}, 400, "profile 'nope' does not exist; choose one of: cpu, gpu"),
    ({"profile": "staff"}, 403, "restricted to members of ml-staff"),
    ({"profile": "gpu", "accelerator": "a100"}, 403, "accelerator 'a100' is restricted"),
    ({"profile": "gpu", "accelerator": "h100"}, 400, "choose one of: t4, none"),
    ({"profile": "gpu", "gpus": 3}, 400, "gpus=3 is not offered for t4 in profile 'gpu'; choose one of: 1, 2"),
    ({"profile": "gpu", "gpus": -1}, 400, "gpus must not be negative"),
    ({"profile": "gpu", "gpus": "two"}, 400, "gpus must be a whole number"),
    ({"profile": "gpu", "gpus": 1.5}, 400, "gpus must be a whole number"),
    ({"profile": "gpu", "image": "secret"}, 403, "image 'secret' is restricted"),
    ({"profile": "cpu", "gpu": 1}, 400, "unknown option(s) 'gpu'"),
])
def test_refusals_name_the_option_and_what_is_allowed(user_options, status, fragment):
    with pytest.raises(PolicyError) as e:
        resolve(user_options)
    assert e.value.status == status and fragment in e.value.message


def test_group_member_sees_restricted_choices():
    spec = resolve({"profile": "staff"}, groups=["ml-staff"])
    assert (spec.accelerator.slug, spec.gpus) == ("a100", 4)


def test_quotas_most_generous_group_wins_and_admins_are_exempt():
    policy = quotas.parse({"default": {"gpus": 1, "servers": 2},
                           "groups": {"a": {"gpus": 4}, "b": {"gpus": 2, "accelerators": {"a100": 1}}}})
    q = policy.for_user(["a", "b"])
    assert (q.gpus, q.servers, q.accelerators) == (4, 2, {"a100": 1})
    assert policy.for_user([], is_admin=True) is None
    assert quotas.parse({"admins_exempt": False}).for_user([], is_admin=True) is not None


def test_quota_violation_messages():
    policy = quotas.parse({"default": {"gpus": 2, "servers": 2}})
    used = quotas.Usage.of([resolve({"profile": "gpu", "gpus": 2})])
    msg = quotas.violation(policy.default, used, resolve({"profile": "gpu", "gpus": 1}))
    assert msg == "1 more GPU would exceed your GPU quota: 2 of 2 in use, 0 left"
    assert quotas.violation(policy.default, used, resolve({})) is None
    full = quotas.Usage.of([resolve({}), resolve({})])
    assert "2 of your 2 allowed servers" in quotas.violation(policy.default, full, resolve({}))


def test_bad_configuration_names_the_key():
    with pytest.raises(TraitError, match=r"Crater.profiles\[0\].accelerators\[0\].counts"):
        crater(profiles=[{"slug": "x", "accelerators": [{"accelerator": "a100", "counts": [0]}]}])
    with pytest.raises(TraitError, match=r"Crater.quotas.groups.g.gpus must be a non-negative integer"):
        crater(quotas={"groups": {"g": {"gpus": -2}}})
    with pytest.raises(TraitError, match=r"Crater.accelerators\[0\].resource"):
        crater(accelerators=[{"slug": "x", "resource": "gpu"}])


class FakeTraits:
    """A stand-in with KubeSpawner's trait names (shaping only reads and sets attributes)."""

    def __init__(self):
        self.image = "base:1"
        self.cpu_guarantee = self.cpu_limit = None
        self.mem_guarantee = self.mem_limit = None
        self.extra_resource_guarantees = {}
        self.extra_resource_limits = {"example.com/foo": "1"}
        self.node_selector = {"pool": "users"}
        self.tolerations = []


def test_cpu_spawn_after_gpu_spawn_carries_no_gpu_settings():
    spawner = FakeTraits()
    baseline = shaping.snapshot(spawner)
    shaping.apply(spawner, resolve({"profile": "staff"}, groups=["ml-staff"]), baseline)
    assert spawner.extra_resource_limits == {"example.com/foo": "1", "nvidia.com/gpu": "4"}
    assert spawner.extra_resource_guarantees == {"nvidia.com/gpu": "4"}
    assert spawner.node_selector == {"pool": "users", "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert spawner.tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    shaping.apply(spawner, resolve({"profile": "cpu"}), baseline)
    assert spawner.extra_resource_limits == {"example.com/foo": "1"} and spawner.extra_resource_guarantees == {}
    assert spawner.node_selector == {"pool": "users"} and spawner.tolerations == []
    assert (spawner.image, spawner.cpu_limit, spawner.mem_limit) == ("base:1", 2.0, 2 * 1024**3)
