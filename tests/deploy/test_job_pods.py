"""The batch job pods the hub builds from each values file: valid Jobs, PodSecurity `restricted`,
the chart's single-user identity and home, and what the shipped NetworkPolicy selects."""

import ipaddress
from types import SimpleNamespace

import pytest

from crater_hub import deploy
from crater_hub.config import Crater
from crater_hub.hubstart import spawner_namespace
from crater_hub.policy import workload
from crater_hub.queue import manifest
from crater_hub.spawner import CraterSpawner, job_pod
from tests.reference import k8s_validate

from .conftest import BASE, HELM_VALUES, OVERLAYS, values_for
from .test_manifests import HUB_SA, JOBS_NS, RBAC, choices, documents, no_cluster_client  # noqa: F401

NETWORK_POLICY = HELM_VALUES / "networkpolicy.yaml"
JOBS_NAMESPACE = HELM_VALUES / "examples" / "jobs-namespace.yaml"
PRIVATE = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                              "169.254.169.254/32")]
#: the volume types PodSecurity `restricted` allows
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}


def restricted_violations(pod):
    """What PodSecurity `restricted` (Kubernetes 1.31) would refuse in a pod spec."""
    found = []
    psc = pod.get("securityContext", {})
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        found.append("host namespaces")
    for volume in pod.get("volumes", []):
        if not set(volume) - {"name"} <= RESTRICTED_VOLUMES:
            found.append(f"volume {volume['name']}")
    for c in pod.get("initContainers", []) + pod["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            found.append("privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append("allowPrivilegeEscalation != false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append("capabilities")
        if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            found.append("runAsNonRoot != true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            found.append("runAsUser = 0")
        seccomp = sc.get("seccompProfile") or psc.get("seccompProfile") or {}
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            found.append("seccompProfile")
    return found


def test_the_checker_refuses_a_notebook_pod_as_the_chart_makes_it():
    """The checker can fail: z2jh's single-user pod (no seccomp, capabilities kept) is not
    `restricted`, and neither is a job pod with a hostPath."""
    pod = {"securityContext": {"runAsUser": 1000, "fsGroup": 100},
           "containers": [{"name": "notebook", "securityContext": {"allowPrivilegeEscalation": False,
                                                                   "runAsUser": 1000}}]}
    assert restricted_violations(pod) == ["capabilities", "runAsNonRoot != true", "seccompProfile"]
    job = manifest.build(SimpleNamespace(id=1, attempt=0, owner="a", name="x", image="i", command=["x"],
                                         env={}, cpu=None, cpu_limit=None, memory=None,
                                         memory_limit=None, gpus=0, max_runtime=60,
                                         shape={"pod": {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}}),
                         "jhub", 60)
    assert restricted_violations(job["spec"]["template"]["spec"]) == ["volume h"]


@pytest.mark.parametrize("overlay", [None, *OVERLAYS], ids=lambda p: p.name if p else "crater.yaml")
async def test_every_profiles_job_pod_is_valid_restricted_and_has_the_home(
        chart_defaults, no_cluster_client, overlay):  # noqa: F811
    values = values_for(chart_defaults, BASE, *([overlay] if overlay else []))
    c = deploy.hub_config(values)
    crater = Crater(config=c)
    catalog = {a.slug: a for a in crater.accelerator_catalog()}
    spawner = CraterSpawner(_mock=True, config=c)
    chart_tolerations = values["scheduling"]["userPods"]["tolerations"]
    made = 0
    for profile, user_options, groups in choices(crater):
        spec = workload.resolve(user_options, crater.profile_list(), "ada", groups, catalog)
        pod = await job_pod.job_pod(spawner, spec, crater.profile_list())
        job = SimpleNamespace(id=3, attempt=0, owner="ada", name="train", image="img:1",
                              command=["python", "train.py"], env={}, cpu="1", cpu_limit="2",
                              memory="1Gi", memory_limit="2Gi", gpus=spec.gpus, max_runtime=60,
                              shape={"resource": spec.accelerator.resource if spec.accelerator else None,
                                     "device_env": spec.accelerator.env if spec.accelerator else "",
                                     "pod": pod})
        body = manifest.build(job, JOBS_NS, 600)
        k8s_validate(body)
        template = body["spec"]["template"]
        spec_ = template["spec"]
        assert restricted_violations(spec_) == [], (profile.slug, user_options)
        assert spec_["automountServiceAccountToken"] is False
        # z2jh's single-user identity (singleuser.uid, singleuser.fsGid)
        assert spec_["securityContext"]["runAsUser"] == values["singleuser"]["uid"]
        assert spec_["securityContext"]["fsGroup"] == values["singleuser"]["fsGid"]
        # shaped as the same profile's server: the chart's tolerations and the accelerator's terms
        acc = spec.accelerator
        assert spec_["nodeSelector"] == (acc.node_selector if acc else {})
        assert spec_["tolerations"] == chart_tolerations + (list(acc.tolerations) if acc else [])
        # the home as the chart defines it, the user's name expanded, and the claim to create
        claims = [v["persistentVolumeClaim"]["claimName"] for v in spec_["volumes"]
                  if "persistentVolumeClaim" in v]
        assert claims == [spawner.pvc_name] and "{" not in spawner.pvc_name
        container = spec_["containers"][0]
        assert container["workingDir"] == values["singleuser"]["storage"]["homeMountPath"]
        assert {"/home/jovyan", "/dev/shm"} <= {m["mountPath"] for m in container["volumeMounts"]}
        (claim,) = pod["claims"]
        k8s_validate(claim)
        assert claim["spec"]["resources"]["requests"]["storage"] == values["singleuser"]["storage"]["capacity"]
        assert claim["spec"]["accessModes"] == values["singleuser"]["storage"]["dynamic"]["storageAccessModes"]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert ("NVIDIA_VISIBLE_DEVICES" in env) == (not (acc and spec.gpus)), (profile.slug, env)
        # the shipped NetworkPolicy selects it, and the chart's hub policy admits it
        selector = network_policy()["spec"]["podSelector"]["matchLabels"]
        assert selector.items() <= template["metadata"]["labels"].items()
        hub_label = chart_defaults["singleuser"]["extraLabels"]
        assert hub_label.items() <= template["metadata"]["labels"].items()
        made += 1
    assert made >= 2


async def test_job_home_never_and_a_separate_namespace_give_no_home(chart_defaults, no_cluster_client):  # noqa: F811
    c = deploy.hub_config(values_for(chart_defaults, BASE))
    crater = Crater(config=c)
    spawner = CraterSpawner(_mock=True, config=c)
    spec = workload.resolve({"profile": "cpu"}, crater.profile_list(), "ada", [], {})
    user = SimpleNamespace(spawner=spawner)
    for kwargs in ({"namespace": "crater-jobs"}, {"namespace": JOBS_NS, "job_home": "never"}):
        pod = await job_pod.for_user(user, spec, crater.profile_list(), **kwargs)
        assert (pod["volumes"], pod["claims"], pod["workdir"]) == ([], [], None), kwargs
        assert pod["uid"] == 1000  # shaped all the same
    pod = await job_pod.for_user(user, spec, crater.profile_list(), namespace=JOBS_NS,
                                 workdir="/home/jovyan/project")
    assert pod["workdir"] == "/home/jovyan/project" and pod["volumes"]


def test_jobs_run_in_the_servers_namespace_of_the_values(chart_defaults):
    """Crater.jobs_namespace empty: the namespace the chart gives KubeSpawner, the release's."""
    for files in ([BASE], *[[BASE, o] for o in OVERLAYS]):
        c = deploy.hub_config(values_for(chart_defaults, *files), namespace=HUB_SA[1])
        crater = Crater(config=c)
        app = SimpleNamespace(spawner_class=CraterSpawner, config=c)
        assert (crater.jobs_namespace or spawner_namespace(app)) == JOBS_NS == HUB_SA[1]


def network_policy():
    (policy,) = documents(NETWORK_POLICY)
    return policy


def test_the_job_network_policy_is_shaped_like_the_chart_singleuser_one(chart_defaults):
    policy = network_policy()
    assert policy["metadata"]["namespace"] == JOBS_NS
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"] and spec["ingress"] == []  # nothing gets in
    rules = spec["egress"]
    hub, dns, internet = rules
    # the hub's API: the hub pods of the release, on the hub's port
    (peer,) = hub["to"]
    assert peer["podSelector"]["matchLabels"] == {"app": "jupyterhub", "component": "hub", "release": "jhub"}
    assert hub["ports"] == [{"port": 8081, "protocol": "TCP"}]
    # DNS only on port 53
    assert {p["port"] for p in dns["ports"]} == {53}
    # the internet, never the private ranges nor the metadata server
    (block,) = internet["to"]
    assert block["ipBlock"]["cidr"] == "0.0.0.0/0" and "ports" not in internet
    assert [ipaddress.ip_network(n) for n in block["ipBlock"]["except"]] == PRIVATE
    # the chart's own single-user defaults say the same
    allow = chart_defaults["singleuser"]["networkPolicy"]["egressAllowRules"]
    assert (allow["privateIPs"], allow["cloudMetadataServer"], allow["nonPrivateIPs"]) == (False, False, True)


def test_a_jobs_namespace_of_their_own_enforces_podsecurity_restricted():
    docs = documents(JOBS_NAMESPACE)
    (namespace,) = [d for d in docs if d["kind"] == "Namespace"]
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    # the queue's Role there is rbac.yaml's, less the home claims (no home in another namespace)
    (role,) = [d for d in docs if d["kind"] == "Role"]
    (main,) = [d for d in documents(RBAC) if d["kind"] == "Role" and d["metadata"]["name"] == role["metadata"]["name"]]
    assert role["rules"] == [r for r in main["rules"] if r["resources"] != ["persistentvolumeclaims"]]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["metadata"]["namespace"] == namespace["metadata"]["name"] == role["metadata"]["namespace"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": HUB_SA[0], "namespace": HUB_SA[1]}]


async def test_static_storage_gives_the_shared_claim_and_the_users_subpath(
        chart_defaults, no_cluster_client, tmp_path):  # noqa: F811
    """singleuser.storage.type static (an NFS claim shared by everyone): the job mounts that claim
    with the user's own subPath, expanded as KubeSpawner expands it, and creates no claim."""
    overlay = tmp_path / "static.yaml"
    overlay.write_text("singleuser:\n  storage:\n    type: static\n"
                       "    static: {pvcName: homes-nfs, subPath: 'home/{username}'}\n")
    c = deploy.hub_config(values_for(chart_defaults, BASE, overlay))
    crater = Crater(config=c)
    spawner = CraterSpawner(_mock=True, config=c)
    spec = workload.resolve({"profile": "cpu"}, crater.profile_list(), "ada", [], {})
    pod = await job_pod.job_pod(spawner, spec, crater.profile_list())
    assert {"name": "home", "persistentVolumeClaim": {"claimName": "homes-nfs"}} in pod["volumes"]
    (home,) = [m for m in pod["volume_mounts"] if m["name"] == "home"]
    assert home == {"name": "home", "mountPath": "/home/jovyan",
                    "subPath": f"home/{spawner._expand_user_properties('{username}')}"}
    assert "{" not in home["subPath"]
    assert pod["claims"] == [] and pod["workdir"] == "/home/jovyan"
