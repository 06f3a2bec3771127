"""Submissions → JobSpec, and JobSpec → the batch/v1 Job, as data."""

from types import SimpleNamespace

import pytest

from crater_hub.accelerators import parse as parse_accelerators
from crater_hub.policy.priorities import parse_priorities
from crater_hub.policy.profiles import parse as parse_profiles
from crater_hub.queue import manifest
from crater_hub.queue.spec import JobError, resolve

ACCS = parse_accelerators([{"slug": "a100", "resource": "nvidia.com/gpu",
                            "node_selector": {"nvidia.com/gpu.product": "A100"},
                            "tolerations": [{"key": "gpu", "operator": "Exists"}]}])
PROFILES = parse_profiles([
    {"slug": "cpu", "cpu": {"guarantee": 0.5, "limit": 2}, "memory": {"guarantee": "1Gi"}},
    {"slug": "gpu", "cpu": {"guarantee": 2, "limit": 8},
     "accelerators": [{"accelerator": "a100", "counts": [1, 2]}]},
], ["a100"])
PRIORITIES = parse_priorities([{"name": "high", "value": 9, "allowed_groups": ["vip"]},
                               {"name": "normal", "value": 1, "default": True},
                               {"name": "scavenge", "value": 0, "best_effort": True}])


def spec(body, groups=()):
    return resolve(body, owner="ada", groups=list(groups), profiles=PROFILES,
                   catalog={a.slug: a for a in ACCS}, priorities=PRIORITIES,
                   default_image="busybox", default_runtime=600, max_runtime=3600)


def test_a_string_command_runs_with_sh_c_and_defaults_apply():
    s = spec({"profile": "cpu", "command": "echo hi"})
    assert s.command == ("sh", "-c", "echo hi") and s.image == "busybox"
    assert s.priority == "normal" and s.max_runtime == 600 and s.gpus == 0
    assert (s.cpu, s.cpu_limit, s.memory) == ("0.5", "2", "1Gi")


def test_restricted_priority_is_403_and_allowed_to_its_group():
    with pytest.raises(JobError) as e:
        spec({"profile": "cpu", "command": "x", "priority": "high"})
    assert e.value.status == 403 and "members of vip" in e.value.message
    assert spec({"profile": "cpu", "command": "x", "priority": "high"}, ["vip"]).priority_value == 9


def test_max_runtime_is_bounded():
    with pytest.raises(JobError, match="max_runtime must be a whole number from 1 to 3600 seconds"):
        spec({"profile": "cpu", "command": "x", "max_runtime": 7200})


def test_gpu_job_manifest_is_shaped_like_a_spawn():
    s = spec({"profile": "gpu", "accelerator": "a100", "gpus": 2, "command": ["python", "t.py"],
              "env": {"SEED": "1"}, "name": "train"})
    job = SimpleNamespace(id=7, attempt=0, owner="ada@example.org", name=s.name, image=s.image,
                          command=list(s.command), env=s.env, cpu=s.cpu, cpu_limit=s.cpu_limit,
                          memory=s.memory, memory_limit=s.memory_limit, gpus=s.gpus,
                          max_runtime=s.max_runtime, shape=s.shape())
    body = manifest.build(job, "jobs", 86400)
    assert body["metadata"]["name"] == "crater-job-7"
    labels = body["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "crater-hub"
    assert labels["crater.io/kind"] == "job" and labels["crater.io/job-id"] == "7"
    assert labels["crater.io/owner"].startswith("ada-example.org--")  # escaped, hashed
    spec_ = body["spec"]
    assert spec_["backoffLimit"] == 0 and spec_["activeDeadlineSeconds"] == 600
    assert spec_["ttlSecondsAfterFinished"] == 86400
    pod = spec_["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "A100"}
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    container = pod["containers"][0]
    assert container["command"] == ["python", "t.py"]
    assert container["resources"] == {"requests": {"cpu": "2", "nvidia.com/gpu": "2"},
                                      "limits": {"cpu": "8", "nvidia.com/gpu": "2"}}
    assert {"name": "SEED", "value": "1"} in container["env"]
    assert manifest.job_name(7, 2) == "crater-job-7-r2"
