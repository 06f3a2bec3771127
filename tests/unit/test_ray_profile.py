"""The one-click Ray profile without a cluster: the profile's config, the ``workers`` option of a
spawn (form and REST), the server's own spec and env, the cluster it plans, and the notebook
client's ``ray://`` version check."""

import json

import pytest
from traitlets.config import Config

from crater_hub.checks import ConfigError
from crater_hub.client import ray as cray
from crater_hub.config import Crater
from crater_hub.policy import profiles, quotas, workload
from crater_hub.policy.ledger import RAY, Holding, Ledger
from crater_hub.policy.offer import offer
from crater_hub.policy.quotas import Quota
from crater_hub.ray import manifests
from crater_hub.ray import profile as ray_profile
from crater_hub.spawner import form
from tests.reference import crd_errors

from .test_form import Page, capacity
from .test_ray_manifests import CATALOG

RAY_PROFILE = {"slug": "ray", "display_name": "Ray cluster", "kind": "ray", "ray": {"workers": [1, 2, 4]},
               "cpu": {"guarantee": 2, "limit": 4}, "memory": {"guarantee": "4Gi", "limit": "8Gi"},
               "accelerators": [{"accelerator": "t4", "counts": [1, 2]}]}
CPU = {"slug": "cpu", "display_name": "CPU", "default": True, "cpu": {"guarantee": 0.5, "limit": 2}}
PROFILES = profiles.parse([CPU, RAY_PROFILE], {"t4"})


def crater():
    c = Config()
    c.Crater.accelerators = [{"slug": "t4", "resource": "nvidia.com/gpu",
                              "node_selector": {"nvidia.com/gpu.product": "NVIDIA-Tesla-T4"}}]
    c.Crater.profiles = [CPU, RAY_PROFILE]
    c.Crater.ray_version = "2.60.0"
    return Crater(config=c)


def test_a_ray_profile_offers_worker_counts_and_other_profiles_none():
    ray = PROFILES[1]
    assert (ray.kind, ray.ray_workers) == ("ray", (1, 2, 4))
    assert (PROFILES[0].kind, PROFILES[0].ray_workers) == ("server", ())
    default = profiles.parse([{"slug": "r", "kind": "ray"}])[0]
    assert default.ray_workers == (1,)


@pytest.mark.parametrize("entry, message", [
    ({"slug": "r", "kind": "spark"}, "Crater.profiles[0].kind must be one of: server, ray; got 'spark'"),
    ({"slug": "r", "ray": {"workers": [1]}}, "Crater.profiles[0].ray is only for profiles with kind: ray"),
    ({"slug": "r", "kind": "ray", "ray": {"workers": [0]}}, "Crater.profiles[0].ray.workers must be"),
    ({"slug": "r", "kind": "ray", "ray": {"workers": "2"}}, "Crater.profiles[0].ray.workers must be"),
    ({"slug": "r", "kind": "ray", "ray": {"replicas": 2}}, "replicas"),
])
def test_bad_ray_profiles_are_refused_at_load_naming_the_key(entry, message):
    with pytest.raises(ConfigError) as e:
        profiles.parse([entry])
    assert message in str(e.value)


@pytest.mark.parametrize("value, expected", [(None, 1), (2, 2), ("4", 4), (" 2 ", 2)])
def test_workers_default_to_the_first_count_and_take_form_strings(value, expected):
    assert ray_profile.workers_for(PROFILES[1], value) == expected


@pytest.mark.parametrize("value", [3, "3", 0, -1, True, "two", 2.0])
def test_workers_outside_the_profiles_counts_are_a_400_naming_the_field(value):
    with pytest.raises(workload.PolicyError) as e:
        ray_profile.workers_for(PROFILES[1], value)
    assert e.value.status == 400
    assert e.value.message == f"workers must be one of 1, 2, 4 in profile 'ray', got {value!r}"


def test_workers_for_a_server_profile_are_refused():
    assert ray_profile.workers_for(PROFILES[0], None) == 0
    with pytest.raises(workload.PolicyError) as e:
        ray_profile.workers_for(PROFILES[0], 2)
    assert e.value.message == "workers: profile 'cpu' starts no Ray cluster; leave 'workers' out"


def test_the_spawn_options_split_into_the_policys_request_and_the_workers():
    options = {"profile": "ray", "accelerator": "t4", "gpus": "1", "workers": "2"}
    request, workers = ray_profile.split(options)
    assert request == {"profile": "ray", "accelerator": "t4", "gpus": "1"} and workers == "2"
    assert options["workers"] == "2"  # the spawner's user_options are left as they were
    spec = workload.resolve(request, PROFILES, "ada", [], CATALOG)
    assert spec.accelerator.slug == "t4" and spec.gpus == 1 and spec.cpu_limit == 4
    assert ray_profile.is_ray(PROFILES, "ray") and not ray_profile.is_ray(PROFILES, "cpu")
    assert not ray_profile.is_ray(PROFILES, None)


def test_the_server_of_a_ray_profile_holds_no_gpu_and_the_cluster_holds_its_workers():
    spec = workload.resolve({"profile": "ray", "gpus": 2}, PROFILES, "ada", [], CATALOG)
    server = ray_profile.server_spec(spec)
    assert (server.accelerator, server.gpus, server.cpu_limit, server.mem_limit) == (None, 0, None, None)
    assert server.profile == "ray"
    plan = ray_profile.plan(crater(), owner="ada", namespace="jhub", server="", spec=spec, workers=2)
    rc = plan.manifest
    assert crd_errors(rc) == []
    assert plan.name == rc["metadata"]["name"] and plan.name.startswith("ray-ada-")
    assert len(plan.name) <= manifests.MAX_NAME
    worker = rc["spec"]["workerGroupSpecs"][0]
    assert worker["replicas"] == 2
    container = worker["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "2"}
    assert container["image"] == "rayproject/ray:2.60.0"
    ann = rc["metadata"]["annotations"]
    assert ann["crater.io/lifetime"] == "server" and ann["crater.io/server"] == ""
    assert "ownerReferences" not in rc["metadata"]  # the pod does not exist yet
    ray_profile.bind(rc, {"name": "jupyter-ada", "uid": "u-1"})
    assert rc["metadata"]["ownerReferences"] == [{"apiVersion": "v1", "kind": "Pod", "name": "jupyter-ada",
                                                  "uid": "u-1", "blockOwnerDeletion": False}]
    # the quota: the server (no GPU) and the cluster's 2 workers × 2 T4 in the one ledger
    ledger, quota = Ledger(), Quota(gpus=4)
    assert ledger.reserve("ada", ("server", ""), Holding.of("server", server), quota) is None
    assert ledger.reserve("ada", (RAY, plan.name), Holding(RAY, spec.accelerator, 4), quota) is None
    assert ledger.usage("ada").gpus == 4 and ledger.usage("ada").servers == 1
    why = ledger.reserve("ada", (RAY, "another"), Holding(RAY, spec.accelerator, 2), quota)
    assert why == "2 more GPUs would exceed your GPU quota: 4 of 4 in use, 0 left"


def test_the_servers_env_points_rays_tools_at_the_cluster_through_the_hub():
    env = ray_profile.server_env("http://10.0.0.1:8081/hub/api", "tok123", "ray-ada-abc")
    assert env == {
        "RAY_ADDRESS": "http://10.0.0.1:8081/hub/crater/ray/ray-ada-abc/dashboard",
        "RAY_JOB_HEADERS": json.dumps({"Authorization": "token tok123"}),
        "CRATER_RAY_CLUSTER": "ray-ada-abc",
    }
    assert ray_profile.server_env("http://hub:8081/prefix/hub/api/", "t", "c")["RAY_ADDRESS"] == \
        "http://hub:8081/prefix/hub/crater/ray/c/dashboard"


def test_the_form_offers_the_ray_profiles_worker_counts_and_submits_workers():
    model = offer(PROFILES, capacity(), "ada", [], None, quotas.Usage())
    ray = next(p for p in model["profiles"] if p["slug"] == "ray")
    assert (ray["kind"], ray["workers"]) == ("ray", [1, 2, 4])
    assert model["profiles"][0]["kind"] == "server" and model["profiles"][0]["workers"] == []
    page = Page(form.render(model, {"profile": "ray", "workers": "2"}))
    workers = page.selects["crater-ray-workers"]
    assert workers["name"] == "profile-option-ray--workers"
    assert [(o["value"], "selected" in o) for o in workers["options"]] == [("1", False), ("2", True), ("4", False)]
    assert "crater-cpu-workers" not in page.selects
    assert "Starts a Ray cluster with this server" in page.text
    submitted = page.submitted()
    assert form.options_from_form(submitted) == {"profile": "ray", "accelerator": "t4", "gpus": "1",
                                                 "workers": "2"}


def cluster(**info):
    return cray.Cluster(None, {"name": "ray-ada-abc", "ray_version": "2.60.0",
                               "image": "rayproject/ray:2.60.0", "token": "secret", **info})


def test_ray_init_address_says_what_differs_before_connecting(monkeypatch):
    with pytest.raises(cray.RayVersionError) as e:
        cluster(image="rayproject/ray:2.9.0-py310", ray_version="2.9.0").ray_init_address(
            ray_version="2.60.0", python_version="3.11", set_token=False)
    assert str(e.value) == (
        "ray:// to Ray cluster ray-ada-abc would fail: Ray 2.60.0 here, 2.9.0 in the cluster; "
        "Python 3.11 here, 3.10 in the cluster (image rayproject/ray:2.9.0-py310). Ray Client needs "
        "identical versions: install the cluster's Ray here, or use the Jobs API "
        "(cluster.job_client(), or `ray job submit` with RAY_ADDRESS).")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    address = cluster().ray_init_address(ray_version="2.60.0", python_version="3.11")
    assert address == "ray://ray-ada-abc-head-svc:10001"
    import os
    assert (os.environ["RAY_AUTH_MODE"], os.environ["RAY_AUTH_TOKEN"]) == ("token", "secret")


def test_current_needs_a_ray_profiles_server(monkeypatch):
    monkeypatch.delenv("CRATER_RAY_CLUSTER", raising=False)
    with pytest.raises(cray.CraterError) as e:
        cray.current(api_url="http://hub/hub/api/", token="t")
    assert e.value.status == 404 and "CRATER_RAY_CLUSTER is not set" in str(e.value)


def test_the_helm_examples_ray_profile_loads_and_its_egress_rule_selects_the_heads():
    from pathlib import Path

    import yaml

    values = yaml.safe_load((Path(__file__).resolve().parents[2] / "helm-values/examples/ray.yaml").read_text())
    parsed = profiles.parse(values["hub"]["config"]["Crater"]["profiles"], {"gpu"})
    ray = next(p for p in parsed if p.kind == "ray")
    assert ray.ray_workers == (1, 2) and ray.accelerators[0].accelerator == "gpu"
    [rule] = values["singleuser"]["networkPolicy"]["egress"]
    assert rule["ports"] == [{"port": 10001, "protocol": "TCP"}]
    wanted = rule["to"][0]["podSelector"]["matchLabels"]
    spec = workload.resolve({"profile": "ray"}, PROFILES, "ada", [], CATALOG)
    head = ray_profile.plan(crater(), owner="ada", namespace="jhub", server="", spec=spec,
                            workers=1).manifest["spec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    # KubeRay adds ray.io/node-type: head to the head pod; the rest is the hub's template's
    assert {k: v for k, v in wanted.items() if k != "ray.io/node-type"}.items() <= head.items()
    assert wanted["ray.io/node-type"] == "head"
