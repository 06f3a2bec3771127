"""Kubernetes objects we ship (helm-values/rbac.yaml, the Kueue example) and the pods CraterSpawner
builds from each values file, validated against Kubernetes' own schemas and Kueue's CRDs.

Built-in kinds (RBAC, Namespace, Pod) are validated with the ``kubernetes-validate`` package in
strict mode (unknown fields rejected, as ``kubectl apply`` does by default); custom resources
with the openAPIV3Schema of their CRD from the reference folder, made strict the same way.
"""

import copy
import re

import kubespawner.spawner as kubespawner_module
import pytest
import yaml
from kubernetes_asyncio.client import ApiClient

from crater_hub import deploy
from crater_hub.config import Crater
from crater_hub.policy import workload as options
from crater_hub.queue import kueue
from crater_hub.spawner import CraterSpawner, shaping
from tests.reference import CRDS, crd_errors, k8s_validate, kubernetes_validate

from .conftest import BASE, HELM_VALUES, MANIFEST_FILES, OVERLAYS, REPO, values_for

RBAC = HELM_VALUES / "rbac.yaml"
KUEUE_QUEUES = HELM_VALUES / "examples" / "kueue-queues.yaml"
KUEUE_VALUES = HELM_VALUES / "examples" / "kueue.yaml"
HUB_SA = ("hub", "jhub")  # the chart's hub ServiceAccount in the namespace the docs install into
JOBS_NS = "jhub"  # Crater.jobs_namespace empty: the servers' namespace, the release's
COMMIT_NS = "crater-system"  # CraterImages.commit_namespace


def documents(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


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


# What crater_hub asks of the Kubernetes API, by feature: (verb, apiGroup, resource, namespace),
# namespace None for cluster-scoped objects or every namespace at once. rbac.yaml must grant
# exactly this: a rule removed denies a row, a rule added grants a row that is not here.
NEEDS = {
    # the shared inventory: list and watch every node and every pod (crater_hub.kube.inventory);
    # get nodes reads no more than list does
    "capacity": [*[(v, "", "nodes", None) for v in ("get", "list", "watch")],
                 *[(v, "", "pods", None) for v in ("list", "watch")]],
    # the job queue (crater_hub.queue.service), in Crater.jobs_namespace: create and delete Jobs,
    # list and watch them, the pods' logs, list and watch the events; get of Jobs and pods reads
    # no more than list does (the pods also come from the capacity cache, all namespaces)
    "batch jobs": [*[(v, "batch", "jobs", JOBS_NS) for v in ("create", "get", "list", "watch", "delete")],
                   *[(v, "", "pods", JOBS_NS) for v in ("get", "list", "watch")],
                   ("get", "", "pods/log", JOBS_NS),
                   *[(v, "", "events", JOBS_NS) for v in ("list", "watch")],
                   # the owner's home claim (crater_hub.queue.home): its access modes, and
                   # KubeSpawner's PVC made when the user never started a server
                   *[(v, "", "persistentvolumeclaims", JOBS_NS) for v in ("get", "create")]],
    # Crater.job_queue_backend: kueue (crater_hub.queue.service, .kueue): list and watch the
    # Workloads (v1beta2), GET .../namespaces/<ns>/localqueues/<lq>/pendingworkloads of Kueue's
    # visibility API; get of Workloads reads no more than list does
    "kueue": [*[(v, "kueue.x-k8s.io", "workloads", JOBS_NS) for v in ("get", "list", "watch")],
              ("get", "visibility.kueue.x-k8s.io", "localqueues/pendingworkloads", JOBS_NS)],
    # the image library's read-only pull Secret in the servers' namespace
    # (crater_hub.images.service.ensure_pull_secret): create, and delete to replace it
    "image pull secret": [(v, "", "secrets", JOBS_NS) for v in ("create", "delete")],
    # image commits, containerd backend (crater_hub.images.backends.containerd): commit Jobs in
    # the system namespace, their pods and logs; nothing in users' namespaces
    "image commits": [*[(v, "batch", "jobs", COMMIT_NS) for v in ("create", "get", "list", "watch", "delete")],
                      *[(v, "", "pods", COMMIT_NS) for v in ("get", "list", "watch")],
                      ("get", "", "pods/log", COMMIT_NS)],
    # Ray clusters next to the notebook servers (crater_hub.ray.clusters): create, the shared
    # cache's list and watch, patch to scale, delete
    "kuberay": [(v, "ray.io", "rayclusters", "jhub")
                for v in ("create", "list", "watch", "patch", "delete")],
}
# What the jupyterhub chart's own Role grants the hub in the release namespace (pods, PVCs,
# secrets, services): calls covered by it need no row in rbac.yaml.
CHART_ROLE = {("get", "", "secrets", JOBS_NS)}
NEEDED = [(feature, *row) for feature, rows in NEEDS.items() for row in rows]

# Every Kubernetes API call in crater_hub (outside localkube) and what it needs; the queue's
# ``self.namespace`` is Crater.jobs_namespace. A call missing here fails
# test_every_api_call_is_in_the_table: add it, and its rule to rbac.yaml.
LIST_WATCH = ("list", "watch")
CALLS = {
    ("WatchCache", "nodes", None): [(v, "", "nodes", None) for v in LIST_WATCH],
    ("WatchCache", "pods", None): [(v, "", "pods", None) for v in LIST_WATCH],
    ("WatchCache", "jobs", "self.namespace"): [(v, "batch", "jobs", JOBS_NS) for v in LIST_WATCH],
    ("WatchCache", "events", "self.namespace"): [(v, "", "events", JOBS_NS) for v in LIST_WATCH],
    # the containerd commit backend follows its Jobs and their pods in the system namespace
    ("WatchCache", "jobs", "commit_namespace"): [(v, "batch", "jobs", COMMIT_NS) for v in LIST_WATCH],
    ("WatchCache", "pods", "commit_namespace"): [(v, "", "pods", COMMIT_NS) for v in LIST_WATCH],
    ("WatchCache", "kueue.WORKLOADS", "self.service.namespace"):
        [(v, "kueue.x-k8s.io", "workloads", JOBS_NS) for v in LIST_WATCH],
    ("BatchV1Api", "create_namespaced_job"): [("create", "batch", "jobs", JOBS_NS)],
    ("BatchV1Api", "delete_namespaced_job"): [("delete", "batch", "jobs", JOBS_NS)],
    ("CoreV1Api", "read_namespaced_pod_log"): [("get", "", "pods/log", JOBS_NS)],
    ("CoreV1Api", "create_namespaced_secret"): [("create", "", "secrets", JOBS_NS)],
    ("CoreV1Api", "delete_namespaced_secret"): [("delete", "", "secrets", JOBS_NS)],
    ("CoreV1Api", "read_namespaced_persistent_volume_claim"):
        [("get", "", "persistentvolumeclaims", JOBS_NS)],
    ("CoreV1Api", "create_namespaced_persistent_volume_claim"):
        [("create", "", "persistentvolumeclaims", JOBS_NS)],
    # Ray clusters (crater_hub.ray.clusters), in the servers' namespace
    ("WatchCache", "manifests.RAYCLUSTERS", "namespace"):
        [(v, "ray.io", "rayclusters", JOBS_NS) for v in LIST_WATCH],
    ("CustomObjectsApi", "create_namespaced_custom_object"): [("create", "ray.io", "rayclusters", JOBS_NS)],
    ("CustomObjectsApi", "patch_namespaced_custom_object"): [("patch", "ray.io", "rayclusters", JOBS_NS)],
    ("CustomObjectsApi", "delete_namespaced_custom_object"): [("delete", "ray.io", "rayclusters", JOBS_NS)],
    # the cluster's Ray token, from the Secret KubeRay makes: the chart's Role grants it
    ("CoreV1Api", "read_namespaced_secret"): [("get", "", "secrets", JOBS_NS)],
    # the raw GET of Kueue's visibility API: test_kueue_paths_are_what_rbac_names
    ("call_api", "path", "GET"):
        [("get", "visibility.kueue.x-k8s.io", "localqueues/pendingworkloads", JOBS_NS)],
}
WATCH_CACHE = re.compile(r'WatchCache\.shared\(\s*("\w+"|[\w.]+)\s*(?:,\s*([\w.]+))?')
CLIENT_CALL = re.compile(r'shared_client\(\s*"(\w+)"\s*\)\s*\.\s*(\w+)\(')
RAW_CALL = re.compile(r'\.call_api\(\s*([\w.()]+)\s*,\s*"(\w+)"')


def api_calls():
    """``{call: [files]}`` for every watch cache and API client call in crater_hub's code."""
    found = {}
    for path in sorted((REPO / "crater_hub").rglob("*.py")):
        if "localkube" in path.parts:
            continue  # the embedded API server, not a client of the cluster
        text = path.read_text()
        calls = [("WatchCache", m[1].strip('"'), m[2]) for m in WATCH_CACHE.finditer(text)]
        calls += [m.groups() for m in CLIENT_CALL.finditer(text)]
        calls += [("call_api", *m.groups()) for m in RAW_CALL.finditer(text)]
        for call in calls:
            found.setdefault(call, []).append(str(path.relative_to(REPO)))
    return found


def rbac_attributes(method, path):
    """(verb, apiGroup, resource, namespace) the API server authorizes a request for a named
    object (or its subresource) by, as in Kubernetes' request info: GET of one object is get."""
    parts = path.strip("/").split("/")
    assert parts[0] == "apis" and method == "GET", path
    group, rest = parts[1], parts[3:]
    namespace = None
    if rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    resource = rest[0] if len(rest) < 3 else f"{rest[0]}/{rest[2]}"
    return ("get", group, resource, namespace)


def test_kueue_paths_are_what_rbac_names():
    """What the kueue backend reads: the Workloads its cache watches and the visibility path."""
    assert kueue.WORKLOADS == "kueue.x-k8s.io/v1beta2/workloads"
    path = kueue.pending_workloads_path(JOBS_NS, "crater")
    assert path == ("/apis/visibility.kueue.x-k8s.io/v1beta2/namespaces/jhub/localqueues/"
                    "crater/pendingworkloads")
    assert [rbac_attributes("GET", path)] == CALLS[("call_api", "path", "GET")]
    assert "kueue.pending_workloads_path(self.service.namespace" in (
        REPO / "crater_hub/queue/backends/kueue.py").read_text()


def test_every_api_call_is_in_the_table():
    found = api_calls()
    assert {c: f for c, f in found.items() if c not in CALLS} == {}, "calls without an RBAC row"
    assert set(CALLS) - set(found) == set(), "rows for calls the code no longer makes"
    rows = {row for rows in NEEDS.values() for row in rows}
    for call, needs in CALLS.items():
        assert set(needs) <= rows | CHART_ROLE, call


@pytest.mark.parametrize("feature, verb, group, resource, namespace", NEEDED)
def test_the_hub_may(hub_may, feature, verb, group, resource, namespace):
    assert hub_may(verb, group, resource, namespace), f"{feature}: rbac.yaml does not grant it"


def granted(docs):
    """Every (verb, group, resource, namespace) the rules bound to the hub grant."""
    return {(verb, group, resource, scope)
            for scope, rules in Permissions(docs).grants for rule in rules
            for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]}


def test_rbac_grants_what_the_table_needs_and_nothing_else():
    assert granted(documents(RBAC)) == {row for rows in NEEDS.values() for row in rows}


def rule_ids():
    return [f"{d['metadata']['name']}[{i}]" for d in documents(RBAC) if d["kind"] in ("Role", "ClusterRole")
            for i in range(len(d["rules"]))]


@pytest.mark.parametrize("rule", rule_ids())
def test_removing_any_rule_denies_a_need(rule):
    docs = documents(RBAC)
    name, index = rule[:-1].split("[")
    role = next(d for d in docs if d["kind"] in ("Role", "ClusterRole") and d["metadata"]["name"] == name)
    del role["rules"][int(index)]
    allows = Permissions(docs).allows
    assert [row for row in NEEDED if not allows(*row[1:])], f"{rule} grants nothing the table needs"


@pytest.mark.parametrize("verb, group, resource, namespace", [
    ("create", "", "pods", None), ("delete", "", "pods", "kube-system"), ("update", "", "nodes", None),
    ("get", "", "secrets", JOBS_NS), ("list", "", "secrets", None),
    ("create", "batch", "jobs", "kube-system"), ("create", "batch", "jobs", None),
    ("delete", "", "persistentvolumeclaims", JOBS_NS), ("list", "", "persistentvolumeclaims", None), ("list", "batch", "jobs", None),
    ("update", "kueue.x-k8s.io", "workloads", JOBS_NS), ("update", "kueue.x-k8s.io", "clusterqueues", None),
    ("list", "kueue.x-k8s.io", "clusterqueues", None), ("get", "kueue.x-k8s.io", "localqueues", JOBS_NS),
    ("get", "", "events", JOBS_NS), ("list", "", "events", None),
    ("create", "ray.io", "rayclusters", "kube-system"), ("create", "ray.io", "rayclusters", None),
    ("create", "rbac.authorization.k8s.io", "rolebindings", JOBS_NS),
    ("create", "", "secrets", COMMIT_NS), ("get", "", "secrets", COMMIT_NS), ("list", "", "secrets", JOBS_NS),
    ("create", "batch", "jobs", "user-alice"), ("create", "", "pods", COMMIT_NS),
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
    # the LocalQueue the hub names on its Jobs, in the namespace it creates them in (the servers',
    # jobs_namespace left empty) and rbac.yaml lets it use
    assert crater.jobs_namespace == ""
    assert (local["metadata"]["name"], local["metadata"]["namespace"]) == \
        (crater.job_kueue_local_queue, JOBS_NS) == ("crater", HUB_SA[1])
    assert objs["ClusterQueue"]["spec"]["namespaceSelector"]["matchLabels"] == \
        {"kubernetes.io/metadata.name": JOBS_NS}
    # every Kueue object validates against Kueue's own CRD (test_manifests_validate) at v1beta2
    assert {d["apiVersion"] for d in documents(KUEUE_QUEUES)} == {"kueue.x-k8s.io/v1beta2"}


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
