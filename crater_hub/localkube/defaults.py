"""Per-kind defaulting and validation done by the API server on create and update.

Only what clients observe is filled in: pod phase and QoS class, Job selectors and counters,
namespace phase, PVC binding, Service cluster IPs, CRD conditions. Validation returns
``(field, message)`` causes for a 422 ``Invalid``.
"""

from .clusterip import AllocationError
from .errors import invalid


def _allocate_cluster_ip(store, res, obj):
    """A Service's cluster IP from the store's allocator: asked for, ``None`` (headless) or free."""
    spec = obj["spec"]
    if spec["type"] == "ExternalName":
        spec.pop("clusterIP", None)
        spec.pop("clusterIPs", None)
        return
    requested = spec.get("clusterIP") or (spec.get("clusterIPs") or [None])[0]
    if requested == "None":
        spec["clusterIP"], spec["clusterIPs"] = "None", ["None"]
        return
    try:
        ip = store.service_ips.allocate(requested)
    except AllocationError as e:
        field = "spec.clusterIPs[0]" if requested else "spec.clusterIPs"
        raise invalid(res, obj["metadata"]["name"], [(field, f'Invalid value: "{requested or ""}": {e}')]) \
            from None
    spec["clusterIP"], spec["clusterIPs"] = ip, [ip]
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    spec.setdefault("internalTrafficPolicy", "Cluster")


def _pod_spec_defaults(spec):
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("enableServiceLinks", True)
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        tag = c.get("image", "").rpartition(":")[2] if ":" in c.get("image", "").rpartition("/")[2] else ""
        c.setdefault("imagePullPolicy", "Always" if tag in ("", "latest") else "IfNotPresent")
        c.setdefault("resources", {})
        res = c["resources"]
        if res.get("limits") and not res.get("requests"):
            res["requests"] = dict(res["limits"])
        elif res.get("limits"):
            for k, v in res["limits"].items():
                res["requests"].setdefault(k, v)


def qos_class(spec):
    containers = spec.get("containers", [])
    guaranteed = bool(containers)
    best_effort = True
    for c in containers:
        r = c.get("resources", {})
        req, lim = r.get("requests") or {}, r.get("limits") or {}
        if req or lim:
            best_effort = False
        for k in ("cpu", "memory"):
            if k not in lim or req.get(k, lim.get(k)) != lim.get(k):
                guaranteed = False
    return "BestEffort" if best_effort else "Guaranteed" if guaranteed else "Burstable"


def apply_on_create(store, res, obj):
    kind = (res.group, res.plural)
    if kind == ("", "pods"):
        spec = obj.setdefault("spec", {})
        _pod_spec_defaults(spec)
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}
    elif kind == ("", "namespaces"):
        obj.setdefault("spec", {})["finalizers"] = ["kubernetes"]
        obj["status"] = {"phase": "Active"}
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    elif kind == ("", "persistentvolumeclaims"):
        spec = obj.setdefault("spec", {})
        spec.setdefault("volumeMode", "Filesystem")
        spec.setdefault("storageClassName", "local-path")
        spec.setdefault("volumeName", f"pvc-{obj['metadata']['uid']}")
        requested = spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")
        obj["status"] = {
            "phase": "Bound",
            "accessModes": spec.get("accessModes", ["ReadWriteOnce"]),
            "capacity": {"storage": requested},
        }
    elif kind == ("", "services"):
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        _allocate_cluster_ip(store, res, obj)
        for port in spec.get("ports", []):
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        obj["status"] = {"loadBalancer": {}}
    elif kind == ("", "serviceaccounts") or kind == ("", "configmaps"):
        pass
    elif kind == ("", "secrets"):
        obj.setdefault("type", "Opaque")
    elif kind == ("", "events"):
        obj.setdefault("count", 1)
        obj.setdefault("type", "Normal")
        for key in ("firstTimestamp", "lastTimestamp", "eventTime"):
            obj.setdefault(key, None)
        obj.setdefault("involvedObject", {})
        obj.setdefault("source", {})
    elif kind == ("batch", "jobs"):
        spec = obj.setdefault("spec", {})
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("suspend", False)
        spec.setdefault("completionMode", "NonIndexed")
        uid = obj["metadata"]["uid"]
        name = obj["metadata"]["name"]
        template = spec.setdefault("template", {})
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        if not spec.get("manualSelector"):
            labels.update({
                "batch.kubernetes.io/controller-uid": uid,
                "controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "job-name": name,
            })
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        obj["metadata"].setdefault("labels", {}).update(
            {"batch.kubernetes.io/job-name": name, "job-name": name,
             "batch.kubernetes.io/controller-uid": uid, "controller-uid": uid}
        )
        _pod_spec_defaults(template.setdefault("spec", {}))
        obj["status"] = {}
    elif kind == ("apiregistration.k8s.io", "apiservices"):
        service = obj.setdefault("spec", {}).get("service")
        if isinstance(service, dict):
            service.setdefault("port", 443)
        obj["status"] = {}
    elif kind == ("apiextensions.k8s.io", "customresourcedefinitions"):
        names = obj.get("spec", {}).get("names", {})
        obj["status"] = {
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in obj.get("spec", {}).get("versions", []) if v.get("storage")],
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": obj["metadata"]["creationTimestamp"]},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted",
                 "lastTransitionTime": obj["metadata"]["creationTimestamp"]},
            ],
        }


def _containers_causes(spec, path):
    causes = []
    containers = spec.get("containers")
    if not containers:
        causes.append((f"{path}.containers", "Required value"))
    seen = set()
    for i, c in enumerate((containers or []) + spec.get("initContainers", [])):
        if not c.get("name"):
            causes.append((f"{path}.containers[{i}].name", "Required value"))
        elif c["name"] in seen:
            causes.append((f"{path}.containers[{i}].name", f'Duplicate value: "{c["name"]}"'))
        seen.add(c.get("name"))
        if not c.get("image"):
            causes.append((f"{path}.containers[{i}].image", "Required value"))
    return causes


def _apiservice_causes(obj):
    """kube-aggregator's ValidateAPIService, for the fields it checks."""
    spec = obj.get("spec") or {}
    group, version = spec.get("group", ""), spec.get("version", "")
    causes = []
    if obj["metadata"]["name"] != f"{version}.{group}":
        causes.append(("metadata.name", 'Invalid value: must be `spec.version+"."+spec.group`'))
    if not group and version != "v1":
        causes.append(("spec.group", "Required value: only v1 may have an empty group and it better be "
                                     "legacy kube"))
    if not version:
        causes.append(("spec.version", "Required value"))
    if not 0 < (spec.get("groupPriorityMinimum") or 0) <= 20000:
        causes.append(("spec.groupPriorityMinimum", f"Invalid value: {spec.get('groupPriorityMinimum') or 0}: "
                                                    "must be positive and less than 20000"))
    if not 0 < (spec.get("versionPriority") or 0) <= 1000:
        causes.append(("spec.versionPriority", f"Invalid value: {spec.get('versionPriority') or 0}: "
                                               "must be positive and less than 1000"))
    service = spec.get("service")
    if service is None:
        if spec.get("caBundle"):
            causes.append(("spec.caBundle", "Invalid value: local APIServices may not have a caBundle"))
        if spec.get("insecureSkipTLSVerify"):
            causes.append(("spec.insecureSkipTLSVerify",
                           "Invalid value: true: local APIServices may not have insecureSkipTLSVerify"))
    else:
        if not isinstance(service, dict) or not service.get("namespace"):
            causes.append(("spec.service.namespace", "Required value"))
        if not isinstance(service, dict) or not service.get("name"):
            causes.append(("spec.service.name", "Required value"))
        port = service.get("port", 443) if isinstance(service, dict) else 443
        if not isinstance(port, int) or not 1 <= port <= 65535:
            causes.append(("spec.service.port", f"Invalid value: {port}: must be between 1 and 65535, inclusive"))
        if spec.get("insecureSkipTLSVerify") and spec.get("caBundle"):
            causes.append(("spec.insecureSkipTLSVerify",
                           "Invalid value: true: may not be true if caBundle is present"))
    return causes


def validate(res, obj):
    kind = (res.group, res.plural)
    if kind == ("", "pods"):
        causes = _containers_causes(obj.get("spec", {}), "spec")
        policy = obj.get("spec", {}).get("restartPolicy")
        if policy not in ("Always", "OnFailure", "Never"):
            causes.append(("spec.restartPolicy", f'Unsupported value: "{policy}": supported values: "Always", "OnFailure", "Never"'))
        return causes
    if kind == ("batch", "jobs"):
        tspec = obj.get("spec", {}).get("template", {}).get("spec", {})
        causes = _containers_causes(tspec, "spec.template.spec")
        policy = tspec.get("restartPolicy")
        if policy not in ("OnFailure", "Never"):
            causes.append(("spec.template.spec.restartPolicy",
                           f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"'))
        return causes
    if kind == ("apiregistration.k8s.io", "apiservices"):
        return _apiservice_causes(obj)
    if kind == ("apiextensions.k8s.io", "customresourcedefinitions"):
        spec = obj.get("spec", {})
        names = spec.get("names", {})
        causes = []
        for f in ("plural", "kind"):
            if not names.get(f):
                causes.append((f"spec.names.{f}", "Required value"))
        if not spec.get("group"):
            causes.append(("spec.group", "Required value"))
        if names.get("plural") and spec.get("group") and obj["metadata"]["name"] != f"{names['plural']}.{spec['group']}":
            causes.append(("metadata.name", 'Invalid value: must be spec.names.plural+"."+spec.group'))
        if not spec.get("versions"):
            causes.append(("spec.versions", "Required value"))
        return causes
    return []


def check_update(res, old, new):
    """Refuse changes to fields Kubernetes treats as immutable (422)."""
    kind = (res.group, res.plural)
    if kind == ("", "pods"):
        o, n = old.get("spec", {}), new.get("spec", {})
        if o.get("nodeName") and n.get("nodeName") != o.get("nodeName"):
            raise invalid(res, old["metadata"]["name"], [("spec.nodeName", "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations)")])
    if kind == ("", "services"):
        o, n = old.get("spec") or {}, new.setdefault("spec", {})
        if o.get("clusterIP") and n.get("type", "ClusterIP") != "ExternalName":
            for key in ("clusterIP", "clusterIPs"):
                if not n.get(key):
                    n[key] = o.get(key)  # left out of a PUT: kept, as the real apiserver does
            if n["clusterIP"] != o["clusterIP"]:
                raise invalid(res, old["metadata"]["name"], [
                    ("spec.clusterIPs[0]", f'Invalid value: ["{n["clusterIP"]}"]: may not change once set')])
    if kind == ("batch", "jobs"):
        if new.get("spec", {}).get("selector") != old.get("spec", {}).get("selector"):
            raise invalid(res, old["metadata"]["name"], [("spec.selector", "Invalid value: field is immutable")])
