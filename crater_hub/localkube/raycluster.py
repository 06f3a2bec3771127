"""The ``ray.io/v1`` RayCluster controller: what KubeRay's operator does, for the fields crater uses.

It serves RayClusters once their CRD exists (installed by whoever installs "KubeRay": the KubeRay
chart in a real cluster, the reference CRD in tests), as KubeRay's operator does. For each one:
the token Secret (``authOptions.mode: token``), the head Service, one head pod and each worker
group's pods at the desired count (``replicas`` within ``minReplicas``..``maxReplicas``; pods named
in ``scaleStrategy.workersToDelete`` go first, then the newest), all owned by the RayCluster so
the garbage collector removes them with it; ``suspend`` (Kueue's gate) deletes every pod and
resumes by recreating them. The status is KubeRay's: the conditions ``HeadPodReady``,
``RayClusterProvisioned`` (True once every pod is ready the first time, and then sticky),
``RayClusterSuspending``/``RayClusterSuspended``, ``RayClusterReplicaFailure`` on a failed pod
creation; the worker counts, ``endpoints``, ``head`` (pod and service IP, names) and the
deprecated, sticky ``state``. Pods and objects are built by :mod:`.raypods`.

A head or worker pod that has ended (Failed/Succeeded) is deleted and replaced, as KubeRay's
shouldDeletePod does for pods whose Ray container cannot restart.
"""

import copy

from . import events
from .controller import Controller
from .errors import ApiError
from .raypods import (
    LABEL_CLUSTER,
    LABEL_GROUP,
    LABEL_NODE_TYPE,
    build_head_service,
    build_pod,
    build_token_secret,
    desired_replicas,
    desired_resources,
    token_enabled,
    token_secret_name,
)
from .selectors import Selector
from .store import isotime

RAYCLUSTERS = ("ray.io", "rayclusters")
PODS = ("", "pods")
COMPONENT = "raycluster-controller"


def minimal_crd():
    """A schema-less ``rayclusters.ray.io`` CRD (v1, status subresource), for a localkube that
    should serve RayClusters without a copy of KubeRay's CRD at hand (``--kuberay-crd``): objects
    are stored as sent, as localkube stores every custom resource."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "rayclusters.ray.io"},
        "spec": {
            "group": "ray.io", "scope": "Namespaced",
            "names": {"kind": "RayCluster", "listKind": "RayClusterList", "plural": "rayclusters",
                      "singular": "raycluster"},
            "versions": [{
                "name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                "additionalPrinterColumns": [
                    {"name": "desired workers", "type": "integer", "jsonPath": ".status.desiredWorkerReplicas"},
                    {"name": "available workers", "type": "integer",
                     "jsonPath": ".status.availableWorkerReplicas"},
                    {"name": "status", "type": "string", "jsonPath": ".status.state"},
                    {"name": "age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}],
            }],
        },
    }


def _owner_cluster(obj):
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "RayCluster" and ref.get("apiVersion", "").startswith("ray.io/"):
            return ref["name"]
    return None


def _ready(pod):
    return pod.get("status", {}).get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in pod["status"].get("conditions") or [])


def _ended(pod):
    return pod.get("status", {}).get("phase") in ("Failed", "Succeeded")


def _set_condition(status, type_, value, reason, message="", generation=None):
    """metav1.Condition semantics: the transition time moves only when the status changes."""
    conditions = status.setdefault("conditions", [])
    now = isotime()
    for c in conditions:
        if c["type"] == type_:
            if c["status"] != value:
                c["lastTransitionTime"] = now
            c.update(status=value, reason=reason, message=message)
            if generation is not None:
                c["observedGeneration"] = generation
            return
    conditions.append({"type": type_, "status": value, "reason": reason, "message": message,
                       "lastTransitionTime": now,
                       **({"observedGeneration": generation} if generation is not None else {})})


def _condition(status, type_):
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)


def _is_true(status, type_):
    c = _condition(status, type_)
    return bool(c and c["status"] == "True")


class RayClusterController(Controller):
    """Reconciles RayClusters into pods, a Service and a Secret; see the module docstring."""

    watches = (RAYCLUSTERS,)

    def keys_for(self, change):
        meta = change.obj["metadata"]
        if change.skey == RAYCLUSTERS:
            return [] if change.type == "DELETED" else [(RAYCLUSTERS, meta["namespace"], meta["name"])]
        if change.skey == PODS:
            owner = _owner_cluster(change.obj)
            if owner:
                return [(RAYCLUSTERS, meta["namespace"], owner)]
        return []

    def _rc_res(self):
        """The served RayCluster kind (v1), or None while its CRD is not installed."""
        return self.registry.lookup("ray.io", "v1", "rayclusters")

    async def reconcile(self, key):
        _, namespace, name = key
        res = self._rc_res()
        rc = self.store.find(res, namespace, name) if res else None
        if rc is None or rc["metadata"].get("deletionTimestamp"):
            return None
        rc = copy.deepcopy(rc)
        status = copy.deepcopy(rc.get("status") or {})
        problem = self._invalid(rc)
        if problem:
            if (status.get("reason") or "") != problem:
                events.record(self.store, rc, "InvalidRayClusterSpec", problem, type_="Warning", component=COMPONENT)
            status.update(state="failed", reason=problem)
            self._write_status(res, rc, status)
            return None
        failure = None
        try:
            self._ensure(rc, build_token_secret(rc) if self._needs_secret(rc) else None, "secrets")
            self._ensure(rc, build_head_service(rc), "services")
            pods = self._pods(rc)
            if rc["spec"].get("suspend") or _is_true(status, "RayClusterSuspending"):
                self._delete(rc, pods, "due to suspension")
            else:
                self._reconcile_pods(rc, pods)
        except ApiError as e:
            failure = e.message
        self._write_status(res, rc, self._status(rc, status, failure))
        return 1.0 if failure else None

    # -- validation ------------------------------------------------------------------------------

    @staticmethod
    def _invalid(rc):
        """The first thing KubeRay's validation would refuse among what this controller reads."""
        spec = rc.get("spec") or {}
        head = spec.get("headGroupSpec") or {}
        if not ((head.get("template") or {}).get("spec") or {}).get("containers"):
            return "headGroupSpec should have at least one container"
        if len(rc["metadata"]["name"]) > 63:
            return "RayCluster name should be no more than 63 characters"
        seen = set()
        for group in spec.get("workerGroupSpecs") or []:
            gname = group.get("groupName")
            if not gname or gname in seen:
                return f"worker group names must be unique and non-empty: {gname!r}"
            seen.add(gname)
            if not ((group.get("template") or {}).get("spec") or {}).get("containers"):
                return f"workerGroupSpec {gname} should have at least one container"
            low, high = group.get("minReplicas") or 0, group.get("maxReplicas", 2**31 - 1)
            if low > high:
                return f"worker group {gname} has minReplicas {low} greater than maxReplicas {high}"
        mode = (spec.get("authOptions") or {}).get("mode")
        if mode not in (None, "disabled", "token"):
            return f"authOptions.mode must be disabled or token, not {mode!r}"
        return None

    def _needs_secret(self, rc):
        return token_enabled(rc) and not (rc["spec"].get("authOptions") or {}).get("secretName")

    # -- children --------------------------------------------------------------------------------

    def _ensure(self, rc, body, plural):
        if body is None:
            return
        res = self.res("", plural)
        ns, name = rc["metadata"]["namespace"], body["metadata"]["name"]
        if self.store.find(res, ns, name) is not None:
            return
        try:
            self.store.create(res, body, ns)
        except ApiError as e:
            if e.code != 409:
                raise

    def _pods(self, rc):
        selector = Selector(labels=f"{LABEL_CLUSTER}={rc['metadata']['name']}")
        items, _ = self.store.list(self.res("", "pods"), rc["metadata"]["namespace"], selector)
        return [p for p in items if _owner_cluster(p) == rc["metadata"]["name"]]

    def _reconcile_pods(self, rc, pods):
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        heads = [p for p in live if p["metadata"]["labels"].get(LABEL_NODE_TYPE) == "head"]
        ended = [p for p in live if _ended(p)]
        if ended:  # KubeRay deletes them and creates the replacements on a later pass
            self._delete(rc, ended, "because it has ended")
            return
        if not heads:
            self._create(rc, "head", rc["spec"]["headGroupSpec"])
        for group in rc["spec"].get("workerGroupSpecs") or []:
            mine = [p for p in live if p["metadata"]["labels"].get(LABEL_NODE_TYPE) == "worker"
                    and p["metadata"]["labels"].get(LABEL_GROUP) == group["groupName"]]
            named = set((group.get("scaleStrategy") or {}).get("workersToDelete") or [])
            doomed = [p for p in mine if p["metadata"]["name"] in named]
            if doomed:
                self._delete(rc, doomed, f"named in workersToDelete of group {group['groupName']}")
            mine = [p for p in mine if p not in doomed]
            diff = desired_replicas(group) - len(mine)
            for _ in range(diff):
                self._create(rc, "worker", group)
            if diff < 0:  # pods not yet running go first, then the newest
                order = sorted(mine, key=lambda p: p["metadata"]["creationTimestamp"], reverse=True)
                order.sort(key=lambda p: p.get("status", {}).get("phase") == "Running")
                self._delete(rc, order[:-diff], f"to scale group {group['groupName']} down")

    def _create(self, rc, node_type, group):
        pod = build_pod(rc, node_type, group)
        try:
            made = self.store.create(self.res("", "pods"), pod, rc["metadata"]["namespace"])
        except ApiError as e:
            events.record(self.store, rc, f"FailedToCreate{node_type.title()}Pod",
                          f"Failed to create {node_type} Pod: {e.message}", type_="Warning", component=COMPONENT)
            raise
        events.record(self.store, rc, f"Created{node_type.title()}Pod",
                      f"Created {node_type} Pod {made['metadata']['namespace']}/{made['metadata']['name']}",
                      component=COMPONENT)

    def _delete(self, rc, pods, why):
        for pod in pods:
            meta = pod["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            try:
                self.store.delete(self.res("", "pods"), meta["namespace"], meta["name"])
            except ApiError as e:
                if e.code != 404:
                    raise
                continue
            events.record(self.store, rc, "DeletedPod", f"Deleted Pod {meta['namespace']}/{meta['name']} {why}",
                          component=COMPONENT)

    # -- status ----------------------------------------------------------------------------------

    def _status(self, rc, status, failure):
        spec, meta = rc["spec"], rc["metadata"]
        generation = meta.get("generation")
        pods = self._pods(rc)
        workers = [p for p in pods if p["metadata"]["labels"].get(LABEL_NODE_TYPE) == "worker"]
        heads = [p for p in pods if p["metadata"]["labels"].get(LABEL_NODE_TYPE) == "head"]
        groups = spec.get("workerGroupSpecs") or []
        desired = sum(desired_replicas(g) for g in groups)
        active = [(g, max(g.get("numOfHosts") or 1, 1)) for g in groups if not g.get("suspend")]
        status.update(
            observedGeneration=generation,
            readyWorkerReplicas=sum(1 for p in workers if _ready(p)),
            availableWorkerReplicas=sum(1 for p in workers if p.get("status", {}).get("phase") == "Running"),
            desiredWorkerReplicas=desired,
            minWorkerReplicas=sum((g.get("minReplicas") or 0) * h for g, h in active),
            maxWorkerReplicas=min(sum(g.get("maxReplicas", 2**31 - 1) * h for g, h in active), 2**31 - 1),
            **desired_resources(rc),
        )
        if failure:
            _set_condition(status, "RayClusterReplicaFailure", "True", "FailedCreatePod", failure)
        else:
            status["conditions"] = [c for c in status.get("conditions") or []
                                    if c["type"] != "RayClusterReplicaFailure"]
        all_ready = bool(pods) and all(_ready(p) for p in pods)
        if not failure and len(pods) == desired + 1 and all_ready:
            status["state"] = "ready"
            status.pop("reason", None)

        head = heads[0] if heads else None
        if head is None:
            _set_condition(status, "HeadPodReady", "False", "HeadPodNotFound", "Head Pod not found")
        else:
            ready = next((c for c in head.get("status", {}).get("conditions") or [] if c["type"] == "Ready"), None)
            if ready and ready["status"] == "True":
                _set_condition(status, "HeadPodReady", "True", "HeadPodRunningAndReady")
            else:
                _set_condition(status, "HeadPodReady", "False", (ready or {}).get("reason") or "Unknown",
                               (ready or {}).get("message") or "")

        suspended, suspending = _is_true(status, "RayClusterSuspended"), _is_true(status, "RayClusterSuspending")
        if not _is_true(status, "RayClusterProvisioned") and not suspended:
            if all_ready:
                _set_condition(status, "RayClusterProvisioned", "True", "AllPodRunningAndReadyFirstTime",
                               "All Ray Pods are ready for the first time")
            else:
                _set_condition(status, "RayClusterProvisioned", "False", "RayClusterPodsProvisioning",
                               "RayCluster Pods are being provisioned for first time")
        if suspending:
            if not pods:
                _set_condition(status, "RayClusterProvisioned", "False", "RayClusterPodsProvisioning",
                               "RayCluster has been suspended")
                _set_condition(status, "RayClusterSuspending", "False", "RayClusterSuspending")
                _set_condition(status, "RayClusterSuspended", "True", "RayClusterSuspended")
        elif suspended:
            if not spec.get("suspend"):
                _set_condition(status, "RayClusterSuspended", "False", "RayClusterSuspended")
        else:
            _set_condition(status, "RayClusterSuspended", "False", "RayClusterSuspended")
            _set_condition(status, "RayClusterSuspending", "True" if spec.get("suspend") else "False",
                           "RayClusterSuspending")
        if spec.get("suspend") and not pods:
            status["state"] = "suspended"

        service = self.store.find(self.res("", "services"), meta["namespace"], build_head_service(rc)["metadata"]["name"])
        if service is not None:
            status["endpoints"] = {p["name"]: str(p.get("targetPort") or p["port"])
                                   for p in service["spec"].get("ports") or [] if p.get("name")}
            cluster_ip = service["spec"].get("clusterIP")
            head_ip = ((head or {}).get("status") or {}).get("podIP", "")
            status["head"] = {
                "podName": head["metadata"]["name"] if head else "",
                "podIP": head_ip,
                "serviceName": service["metadata"]["name"],
                "serviceIP": head_ip if cluster_ip in (None, "None") else cluster_ip,
            }
            status["head"] = {k: v for k, v in status["head"].items() if v}
        old_state = (rc.get("status") or {}).get("state")
        if status.get("state") and status.get("state") != old_state:
            status.setdefault("stateTransitionTimes", {})[status["state"]] = isotime()
        return status

    def _write_status(self, res, rc, status):
        if status == (rc.get("status") or {}):
            return
        status["lastUpdateTime"] = isotime()
        meta = rc["metadata"]

        def put(obj):
            if obj["metadata"]["uid"] == meta["uid"]:
                obj["status"] = status

        try:
            self.store.mutate(res, meta["namespace"], meta["name"], put, subresource="status")
        except ApiError as e:
            if e.code != 404:
                raise


__all__ = ["RayClusterController", "token_secret_name"]
