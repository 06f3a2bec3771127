"""The one policy, as data: a spawn's user_options and a job's body resolve alike; images come
from the allow-list; the platform's environment names are refused; a job that could never run is
refused at submit."""

from types import SimpleNamespace

import pytest

from crater_hub.accelerators import Accelerator
from crater_hub.checks import ConfigError
from crater_hub.policy import profiles, quotas, workload
from crater_hub.policy.priorities import parse_priorities
from crater_hub.queue.spec import JobError, never_runs
from crater_hub.queue.spec import resolve as resolve_job

T4 = Accelerator("t4", "Tesla T4", "nvidia.com/gpu", {"nvidia.com/gpu.product": "NVIDIA-Tesla-T4"},
                 env="NVIDIA_VISIBLE_DEVICES")
MI = Accelerator("mi300", "MI300", "amd.com/gpu", env="ROCR_VISIBLE_DEVICES")
CATALOG = {"t4": T4, "mi300": MI}
PROFILES = profiles.parse([
    {"slug": "cpu", "default": True},
    {"slug": "gpu", "images": [{"slug": "torch", "image": "pytorch:1"},
                               {"slug": "secret", "image": "reg.example.org/secret:1",
                                "allowed_groups": ["staff"]}],
     "image_patterns": ["reg.example.org/team/*",
                        {"pattern": "reg.example.org/staff/**", "allowed_groups": ["staff"]}],
     "accelerators": [{"accelerator": "t4", "counts": [1, 2, 8]}], "allow_cpu_only": True},
], ["t4", "mi300"])
PRIORITIES = parse_priorities([{"name": "normal", "default": True},
                               {"name": "scavenge", "best_effort": True}])


def spawn(options, groups=()):
    return workload.resolve(options, PROFILES, "ada", list(groups), CATALOG, "base:1")


def job(body, groups=()):
    return resolve_job({"command": "true", **body}, owner="ada", groups=list(groups),
                       profiles=PROFILES, catalog=CATALOG, priorities=PRIORITIES,
                       default_image="base:1", default_runtime=60, max_runtime=600)


def refusal(call, *args):
    with pytest.raises((workload.PolicyError, JobError)) as e:
        call(*args)
    return e.value.status, e.value.message


@pytest.mark.parametrize("request_, expected", [
    ({"profile": "gpu"}, ("t4", 1, "pytorch:1")),
    ({"profile": "gpu", "accelerator": None}, (None, 0, "pytorch:1")),
    ({"profile": "gpu", "accelerator": "none"}, (None, 0, "pytorch:1")),
    ({"profile": "gpu", "gpus": 0}, (None, 0, "pytorch:1")),
    ({"profile": "gpu", "gpus": 2, "image": "torch"}, ("t4", 2, "pytorch:1")),
    ({"profile": "gpu", "image": "reg.example.org/team/trainer:v2"}, ("t4", 1, "reg.example.org/team/trainer:v2")),
    ({"profile": "cpu", "image": "base:1"}, (None, 0, "base:1")),
])
def test_a_spawn_and_a_job_resolve_the_same_request_alike(request_, expected):
    s, j = spawn(request_), job(request_)
    assert (s.accelerator and s.accelerator.slug, s.gpus, s.image) == expected
    assert (j.accelerator and j.accelerator.slug, j.gpus, j.image) == expected


@pytest.mark.parametrize("request_, status, fragment", [
    ({"profile": "gpu", "image": "evil/miner:1"}, 400,
     "image 'evil/miner:1' is not allowed in profile 'gpu'; allowed: one of torch or an image "
     "matching 'reg.example.org/team/*'"),
    ({"profile": "gpu", "image": "reg.example.org/team/a/b:1"}, 400, "is not allowed"),  # * is one segment
    ({"profile": "gpu", "image": "secret"}, 403, "image 'secret' is restricted to members of staff"),
    ({"profile": "gpu", "image": "reg.example.org/secret:1"}, 403, "restricted to members of staff"),
    ({"profile": "gpu", "image": "reg.example.org/staff/x/y:1"}, 403, "restricted to members of staff"),
    ({"profile": "gpu", "image": "not an image"}, 400, "is not a slug or an image reference"),
    ({"profile": "cpu", "image": "python:3"}, 400, "allowed: 'base:1'"),
    ({"profile": "gpu", "accelerator": "mi300"}, 400, "not offered by profile 'gpu'; choose one of: t4, none"),
    ({"profile": "gpu", "accelerator": None, "gpus": 1}, 400, "gpus must be 0"),
])
def test_refusals_are_the_same_on_both_paths(request_, status, fragment):
    for call in (spawn, job):
        got_status, message = refusal(call, request_)
        assert got_status == status and fragment in message, (call.__name__, message)


def test_group_members_may_use_restricted_images_by_slug_reference_and_pattern():
    for image in ("secret", "reg.example.org/secret:1", "reg.example.org/staff/x/y:1"):
        assert spawn({"profile": "gpu", "image": image}, ["staff"]).image.startswith("reg.example.org/")
        assert job({"profile": "gpu", "image": image}, ["staff"]).image.startswith("reg.example.org/")


def test_bad_image_patterns_name_the_key():
    with pytest.raises(ConfigError, match=r"Crater.profiles\[0\].image_patterns\[0\] must be an image"):
        profiles.parse([{"slug": "x", "image_patterns": ["reg/ team/*"]}])
    with pytest.raises(ConfigError, match=r"image_patterns\[0\] has unknown keys"):
        profiles.parse([{"slug": "x", "image_patterns": [{"pattern": "a/*", "groups": ["g"]}]}])


@pytest.mark.parametrize("name", ["NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
                                  "HIP_VISIBLE_DEVICES", "ASCEND_VISIBLE_DEVICES",
                                  "ASCEND_RT_VISIBLE_DEVICES", "JUPYTERHUB_API_TOKEN", "CRATER_ANYTHING"])
def test_environment_names_the_platform_owns_are_refused(name):
    status, message = refusal(job, {"env": {name: "all"}})
    assert status == 400 and f"env name {name!r} is reserved" in message
    assert job({"env": {"MY_VISIBLE": "1"}}).env == {"MY_VISIBLE": "1"}


def test_a_job_that_could_never_run_is_refused_with_its_reason():
    quota = quotas.parse({"default": {"gpus": 4, "accelerators": {"t4": 2}}}).default
    fit = SimpleNamespace(fits_when_empty=False, largest_node=4, message="8 × Tesla T4 is more than any node holds.")
    status, message = refusal(never_runs, job({"profile": "gpu", "gpus": 8}), quota, None)
    assert status == 403 and "8 GPUs is more than your GPU quota of 4" in message
    status, message = refusal(never_runs, job({"profile": "gpu", "gpus": 8}), None, fit)
    assert status == 400 and "more than any node holds" in message and "at most 4" in message
    never_runs(job({"profile": "gpu", "gpus": 8, "priority": "scavenge"}), quota,
               SimpleNamespace(fits_when_empty=True))  # best-effort: bounded by nodes only
    status, message = refusal(never_runs, job({"profile": "gpu", "gpus": 2}), quotas.Quota(accelerators={"t4": 1}), None)
    assert status == 403 and "more than your quota of 1 for them" in message
    none = SimpleNamespace(fits_when_empty=False, largest_node=0, message="No node in the cluster offers Tesla T4.")
    status, message = refusal(never_runs, job({"profile": "gpu"}), None, none)
    assert status == 400 and message.startswith("accelerator: No node")
