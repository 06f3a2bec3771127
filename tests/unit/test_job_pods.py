"""Job pods as data: as safe as notebook pods, shaped like a spawn, with the owner's home."""

from types import SimpleNamespace

from crater_hub.accelerators import Accelerator
from crater_hub.policy import workload as options
from crater_hub.queue import manifest
from crater_hub.spawner import shaping

A100 = Accelerator("a100", "A100", "nvidia.com/gpu", {"nvidia.com/gpu.product": "A100"},
                   ({"key": "gpu", "operator": "Exists"},), env="NVIDIA_VISIBLE_DEVICES")
MI300 = Accelerator("mi300", "MI300", "amd.com/gpu", env="ROCR_VISIBLE_DEVICES")

HOME_POD = {
    "namespace": "jhub",
    "node_selector": {"pool": "users", "nvidia.com/gpu.product": "A100"},
    "tolerations": [{"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user",
                     "effect": "NoSchedule"}, {"key": "gpu", "operator": "Exists"}],
    "node_affinity_required": [{"matchExpressions": [
        {"key": "zone", "operator": "In", "values": ["a"]}]}],
    "uid": 1000, "gid": None, "fs_gid": 100, "supplemental_gids": [],
    "image_pull_secrets": [{"name": "regcred"}], "image_pull_policy": "IfNotPresent",
    "scheduler_name": None,
    "volumes": [{"name": "volume-ada", "persistentVolumeClaim": {"claimName": "claim-ada"}}],
    "volume_mounts": [{"name": "volume-ada", "mountPath": "/home/jovyan"}],
    "claims": [], "server_pod": "jupyter-ada", "workdir": "/home/jovyan",
}


def job(gpus=0, shape=None, **extra):
    return SimpleNamespace(id=7, attempt=0, owner="ada", name="train", image="img:1",
                           command=["python", "train.py"], env={}, cpu="1", cpu_limit=None,
                           memory=None, memory_limit=None, gpus=gpus, max_runtime=600,
                           shape=shape or {}, **extra)


def gpu_shape(acc, pod=None):
    shape = {"resource": acc.resource, "node_selector": dict(acc.node_selector),
             "tolerations": list(acc.tolerations), "device_env": acc.env}
    if pod is not None:
        shape["pod"] = pod
    return shape


def pod_of(body):
    return body["spec"]["template"]["spec"]


def env_of(body):
    return {e["name"]: e["value"] for e in pod_of(body)["containers"][0]["env"]}


def test_every_job_pod_meets_podsecurity_restricted_and_has_no_token():
    for shape in ({}, gpu_shape(A100, HOME_POD)):
        body = manifest.build(job(shape=shape), "jhub", 60)
        pod = pod_of(body)
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        container = pod["containers"][0]["securityContext"]
        assert container["allowPrivilegeEscalation"] is False
        assert container["capabilities"] == {"drop": ["ALL"]}
        labels = body["spec"]["template"]["metadata"]["labels"]
        assert labels["hub.jupyter.org/network-access-hub"] == "true"


def test_the_spawners_identity_shaping_and_home_are_the_pods():
    body = manifest.build(job(gpus=1, shape=gpu_shape(A100, HOME_POD)), "jhub", 60)
    pod = pod_of(body)
    assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"},
                                      "runAsUser": 1000, "fsGroup": 100}
    assert pod["nodeSelector"] == HOME_POD["node_selector"]
    assert pod["tolerations"] == HOME_POD["tolerations"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["volumes"] == HOME_POD["volumes"]
    container = pod["containers"][0]
    assert container["volumeMounts"] == HOME_POD["volume_mounts"]
    assert container["workingDir"] == "/home/jovyan"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert pod["affinity"] == {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": HOME_POD["node_affinity_required"]}}}


def test_a_single_node_home_adds_its_node_to_every_required_term():
    body = manifest.build(job(shape=gpu_shape(A100, HOME_POD)), "jhub", 60, home_node="node-7")
    terms = pod_of(body)["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    on_node = {"key": "metadata.name", "operator": "In", "values": ["node-7"]}
    assert terms == [{**HOME_POD["node_affinity_required"][0], "matchFields": [on_node]}]
    plain = manifest.build(job(shape={"pod": {"uid": 1000}}), "jhub", 60, home_node="node-7")
    assert pod_of(plain)["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"] == {"nodeSelectorTerms": [{"matchFields": [on_node]}]}


def test_only_a_pod_holding_nvidia_gpus_goes_without_nvidia_visible_devices_void():
    assert env_of(manifest.build(job(), "ns", 60))["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert "NVIDIA_VISIBLE_DEVICES" not in env_of(manifest.build(job(1, gpu_shape(A100)), "ns", 60))
    # a CPU-only job of a GPU profile, and a job holding another vendor's devices
    assert env_of(manifest.build(job(0, gpu_shape(A100)), "ns", 60))["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert env_of(manifest.build(job(2, gpu_shape(MI300)), "ns", 60))["NVIDIA_VISIBLE_DEVICES"] == "void"


class Traits:
    """KubeSpawner's trait names, as the operator configured them (shaping reads and sets them)."""

    def __init__(self):
        self.image = "base:1"
        self.cpu_guarantee = self.cpu_limit = self.mem_guarantee = self.mem_limit = None
        self.extra_resource_guarantees, self.extra_resource_limits = {}, {}
        self.node_selector = {"pool": "users"}
        self.tolerations = []
        self.environment = {"NVIDIA_VISIBLE_DEVICES": "all", "LANG": "C.UTF-8"}
        self.node_affinity_required = []


def test_servers_get_nvidia_visible_devices_void_on_every_spawn_without_nvidia_gpus():
    spawner = Traits()
    baseline = shaping.snapshot(spawner)
    for spec, expected in ((options.WorkloadSpec("cpu"), "void"),
                           (options.WorkloadSpec("gpu", accelerator=A100, gpus=1), None),
                           (options.WorkloadSpec("cpu"), "void"),
                           (options.WorkloadSpec("gpu", accelerator=A100, gpus=0), "void"),
                           (options.WorkloadSpec("amd", accelerator=MI300, gpus=1), "void")):
        shaping.apply(spawner, spec, baseline)
        assert spawner.environment.get("NVIDIA_VISIBLE_DEVICES") == expected, spec
        assert spawner.environment["LANG"] == "C.UTF-8"


def test_a_job_is_shaped_on_a_copy_the_live_spawner_keeps_its_values():
    spawner = Traits()
    baseline = shaping.snapshot(spawner, ["node_affinity_required"])
    zone = [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]
    spec = options.WorkloadSpec("gpu", accelerator=A100, gpus=2,
                             kubespawner_override={"node_affinity_required": zone,
                                                   "node_selector": {"disk": "ssd"}})
    view = shaping.shaped(spawner, spec, baseline)
    assert view.node_selector == {"pool": "users", "nvidia.com/gpu.product": "A100", "disk": "ssd"}
    assert view.tolerations == [{"key": "gpu", "operator": "Exists"}]
    assert view.node_affinity_required == zone
    assert view.extra_resource_limits == {"nvidia.com/gpu": "2"}
    assert (spawner.node_selector, spawner.tolerations, spawner.node_affinity_required) == (
        {"pool": "users"}, [], [])
    assert spawner.environment["NVIDIA_VISIBLE_DEVICES"] == "all"


def test_workdir_must_be_an_absolute_path():
    import pytest

    from crater_hub.policy.priorities import parse_priorities
    from crater_hub.policy.profiles import parse
    from crater_hub.queue import spec as spec_mod

    profiles = parse([{"slug": "cpu", "default": True}])
    kwargs = dict(owner="ada", groups=[], profiles=profiles, catalog={}, priorities=parse_priorities([]),
                  default_image="img", default_runtime=60, max_runtime=60)
    ok = spec_mod.resolve({"profile": "cpu", "command": "x", "workdir": "/data/run"}, **kwargs)
    assert ok.workdir == "/data/run" and ok.spawn.profile == "cpu"
    for bad in ("relative/dir", 3, "/a\nb", "/" + "x" * 2000):
        with pytest.raises(spec_mod.JobError, match="workdir must be an absolute path"):
            spec_mod.resolve({"profile": "cpu", "command": "x", "workdir": bad}, **kwargs)
