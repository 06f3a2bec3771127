"""Kubernetes objects we ship (helm-values/rbac.yaml, the Kueue example) and the pods CraterSpawner
builds from each values file, validated against Kubernetes' own schemas and Kueue's CRDs.

Built-in kinds (RBAC, Namespace, Pod) are validated with the ``kubernetes-validate`` package in
strict mode (unknown fields rejected, as ``kubectl apply`` does by default); custom resources
with the openAPIV3Schema of their CRD from the reference folder, made strict the same way.
"""

import copy

import kubespawner.spawner as kubespawner_module
import pytest
import yaml
from jsonschema import Draft202012Validator
from kubernetes_asyncio.client import ApiClient

from crater_hub import deploy
from crater_hub.config import Crater
from crater_hub.spawner import CraterSpawner, options, shaping
from tests.reference import load_reference

from .conftest import BASE, HELM_VALUES, MANIFEST_FILES, OVERLAYS, values_for

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - a broken install, not a skip
    kubernetes_validate = None

KUBERNETES_VERSION = "1.30"  # the oldest Kubernetes Kueue 0.19 and KubeRay 1.x support
RBAC = HELM_VALUES / "rbac.yaml"
KUEUE_QUEUES = HELM_VALUES / "examples" / "kueue-queues.yaml"
KUEUE_VALUES = HELM_VALUES / "examples" / "kueue.yaml"
HUB_SA = ("hub", "jhub")  # the chart's hub ServiceAccount in the namespace the docs install into
JOBS_NS = "crater-jobs"
CRDS = {
    "ResourceFlavor": "kueue-resourceflavors.yaml",
    "ClusterQueue": "kueue-clusterqueues.yaml",
    "LocalQueue": "kueue-localqueues.yaml",
    "RayCluster": "kuberay-ray.io_rayclusters.yaml",
}


def documents(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_validate(obj):
    """Raise on an object Kubernetes would refuse (unknown fields included)."""
    assert kubernetes_validate is not None, \
        "kubernetes-validate is not installed: pip install -e '.[test]' (it is in the test extra)"
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def strict(schema):
    """A CRD's structural schema, with unknown fields refused where the CRD does not keep them."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) if k != "properties" else {n: strict(s) for n, s in v.items()}
           for k, v in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def crd_errors(obj):
    """Where ``obj`` breaks the schema of its CRD, at the apiVersion it names."""
    crd = load_reference(CRDS[obj["kind"]])
    group, version = obj["apiVersion"].split("/")
    assert crd["spec"]["group"] == group
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    assert version in served, f"{obj['kind']} {version} is not served; served: {sorted(served)}"
    schema = strict(served[version]["schema"]["openAPIV3Schema"])
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in Draft202012Validator(schema).iter_errors(obj)]


# -- RBAC ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: p.name)
def test_manifests_validate(path):
    for obj in documents(path):
        if obj["kind"] in CRDS:
            assert crd_errors(obj) == [], obj["metadata"]["name"]
        else:
            k8s_validate(obj)


def test_a_broken_manifest_is_refused():
    """The same validators catch a typo in a built-in kind and in a custom resource."""
    role = copy.deepcopy(next(d for d in documents(RBAC) if d["kind"] == "Role"))
    role["rules"][0]["verb"] = role["rules"][0].pop("verbs")
    with pytest.raises(kubernetes_validate.ValidationError, match="verb"):
        k8s_validate(role)
    queue = copy.deepcopy(next(d for d in documents(KUEUE_QUEUES) if d["kind"] == "ClusterQueue"))
    queue["spec"]["queueingStrategy"] = "FIFO"
    queue["spec"]["resourceGroups"][0]["flavor"] = []
    assert crd_errors(queue) == [
        "spec.queueingStrategy: 'FIFO' is not one of ['StrictFIFO', 'BestEffortFIFO']",
        "spec.resourceGroups.0: Additional properties are not allowed ('flavor' was unexpected)",
    ]


def test_every_rbac_rule_is_commented():
    lines = RBAC.read_text().splitlines()
    rules = [i for i, line in enumerate(lines) if line.strip().startswith("- apiGroups:")]
    assert len(rules) == sum(len(d.get("rules", [])) for d in documents(RBAC))
    for i in rules:
        assert lines[i - 1].strip().startswith("#"), f"rbac.yaml line {i + 1}: rule without a comment"


class Permissions:
    """What the hub's ServiceAccount may do under helm-values/rbac.yaml, as Kubernetes decides."""

    def __init__(self, docs):
        roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
                 for d in docs if d["kind"] in ("Role", "ClusterRole")}
        self.grants = []  # (namespace or None for every namespace and cluster scope, rules)
        for binding in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
            if not any((s["kind"], s["name"], s.get("namespace")) == ("ServiceAccount", *HUB_SA)
                       for s in binding["subjects"]):
                continue
            ref = binding["roleRef"]
            namespace = binding["metadata"].get("namespace")
            role = roles[(ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"])]
            self.grants.append((namespace, role["rules"]))

    def allows(self, verb, group, resource, namespace=None):
        """``namespace`` None: cluster-scoped objects, or all namespaces at once."""
        return any(
            (scope is None or scope == namespace)
            and group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
            for scope, rules in self.grants for rule in rules)

    def rules(self):
        return [rule for _, rules in self.grants for rule in rules]


@pytest.fixture(scope="module")
def hub_may():
    return Permissions(documents(RBAC)).allows


@pytest.mark.parametrize("verb, group, resource, namespace", [
    # capacity: the shared inventory watches all nodes and all pods (crater_hub.kube.inventory)
    ("list", "", "nodes", None), ("watch", "", "nodes", None),
    ("list", "", "pods", None), ("watch", "", "pods", None),
    # batch jobs in the jobs namespace
    *[(v, "batch", "jobs", JOBS_NS) for v in ("create", "get", "list", "watch", "delete")],
    ("get", "", "pods/log", JOBS_NS), ("watch", "", "events", JOBS_NS),
    # Kueue
    ("watch", "kueue.x-k8s.io", "workloads", JOBS_NS), ("get", "kueue.x-k8s.io", "localqueues", JOBS_NS),
    ("get", "visibility.kueue.x-k8s.io", "localqueues/pendingworkloads", JOBS_NS),
    ("list", "kueue.x-k8s.io", "clusterqueues", None),
    # KubeRay, next to the notebook servers
    ("create", "ray.io", "rayclusters", "jhub"), ("delete", "ray.io", "rayclusters", "jhub"),
])
def test_the_hub_may(hub_may, verb, group, resource, namespace):
    assert hub_may(verb, group, resource, namespace)


@pytest.mark.parametrize("verb, group, resource, namespace", [
    ("create", "", "pods", None), ("delete", "", "pods", "kube-system"), ("update", "", "nodes", None),
    ("get", "", "secrets", JOBS_NS), ("list", "", "secrets", None),
    ("create", "batch", "jobs", "jhub"), ("create", "batch", "jobs", None), ("list", "batch", "jobs", None),
    ("update", "kueue.x-k8s.io", "workloads", JOBS_NS), ("update", "kueue.x-k8s.io", "clusterqueues", None),
    ("create", "ray.io", "rayclusters", JOBS_NS), ("create", "ray.io", "rayclusters", None),
    ("create", "rbac.authorization.k8s.io", "rolebindings", JOBS_NS),
])
def test_the_hub_may_not(hub_may, verb, group, resource, namespace):
    assert not hub_may(verb, group, resource, namespace)


def test_no_wildcards_and_cluster_roles_only_read():
    docs = documents(RBAC)
    for rule in Permissions(docs).rules():
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"]
    for role in (d for d in docs if d["kind"] == "ClusterRole"):
        for rule in role["rules"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}, role["metadata"]["name"]


# -- Kueue example ---------------------------------------------------------------------------------


def test_kueue_queues_match_the_kueue_values_and_rbac(chart_defaults):
    objs = {d["kind"]: d for d in documents(KUEUE_QUEUES)}
    crater = Crater(config=deploy.hub_config(values_for(chart_defaults, BASE, KUEUE_VALUES)))
    flavors = {d["metadata"]["name"]: d for d in documents(KUEUE_QUEUES) if d["kind"] == "ResourceFlavor"}
    covered = {r for group in objs["ClusterQueue"]["spec"]["resourceGroups"] for r in group["coveredResources"]}
    for acc in crater.accelerator_catalog():
        # what a notebook asks for and what Kueue admits against are the same nodes
        assert flavors[acc.slug]["spec"]["nodeLabels"] == acc.node_selector
        assert acc.resource in covered
    local = objs["LocalQueue"]
    assert local["spec"]["clusterQueue"] == objs["ClusterQueue"]["metadata"]["name"]
    assert local["metadata"]["namespace"] == JOBS_NS
    assert objs["ClusterQueue"]["spec"]["namespaceSelector"]["matchLabels"] == \
        {"kubernetes.io/metadata.name": JOBS_NS}
    assert "TODO(issue 4)" in KUEUE_VALUES.read_text()  # the engine switch is pending issue 4


# -- the pods CraterSpawner builds from each values file --------------------------------------------


@pytest.fixture
def no_cluster_client(monkeypatch):
    """KubeSpawner loads a kubeconfig when built; building a pod manifest needs no cluster."""
    monkeypatch.setattr(kubespawner_module, "load_config", lambda **kw: None)
    monkeypatch.setattr(kubespawner_module, "shared_client", lambda *a, **kw: None)


def choices(crater):
    """Every (profile, user_options, groups) a user of the right groups could start."""
    for profile in crater.profile_list():
        groups = sorted(profile.access.groups | {g for a in profile.accelerators for g in a.access.groups})
        if profile.allow_cpu_only:
            yield profile, {"profile": profile.slug, "accelerator": "none"}, groups
        for acc in profile.accelerators:
            yield profile, {"profile": profile.slug, "accelerator": acc.accelerator, "gpus": max(acc.counts)}, groups


@pytest.mark.parametrize("overlay", [None, *OVERLAYS], ids=lambda p: p.name if p else "crater.yaml")
async def test_every_profile_makes_a_valid_pod(chart_defaults, no_cluster_client, overlay):
    values = values_for(chart_defaults, BASE, *([overlay] if overlay else []))
    c = deploy.hub_config(values)
    crater = Crater(config=c)
    catalog = {a.slug: a for a in crater.accelerator_catalog()}
    spawner = CraterSpawner(_mock=True, config=c)
    baseline = shaping.snapshot(spawner)
    chart_tolerations = values["scheduling"]["userPods"]["tolerations"]
    made = 0
    for profile, user_options, groups in choices(crater):
        spec = options.resolve(user_options, crater.profile_list(), "ada", groups, catalog)
        shaping.apply(spawner, spec, baseline)
        pod = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())
        k8s_validate(pod)
        container = pod["spec"]["containers"][0]
        devices = {r: n for r, n in container["resources"]["limits"].items() if r not in ("cpu", "memory")}
        acc = spec.accelerator
        # exactly the devices asked for, on nodes of that model, tolerating their taint; nothing
        # of a GPU choice on a CPU-only server
        assert devices == ({acc.resource: str(spec.gpus)} if acc else {}), (profile.slug, user_options)
        assert pod["spec"].get("nodeSelector", {}) == (acc.node_selector if acc else {})
        assert pod["spec"]["tolerations"] == chart_tolerations + (list(acc.tolerations) if acc else [])
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/home/jovyan", "/dev/shm"} <= mounts  # singleuser.storage still applies
        made += 1
    assert made >= 2
