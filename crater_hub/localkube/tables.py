"""Server-side printing: ``meta.k8s.io/v1`` Tables, which kubectl asks for on ``get``.

Columns and cell wording follow kubectl's printers for the kinds we serve; custom resources use
their CRD's ``additionalPrinterColumns``.
"""

from .store import parse_time, utcnow


def age(timestamp):
    if not timestamp:
        return "<unknown>"
    secs = int((utcnow() - parse_time(timestamp)).total_seconds())
    if secs < 120:
        return f"{max(secs, 0)}s"
    mins = secs // 60
    if mins < 10:
        return f"{mins}m{secs % 60}s" if secs % 60 else f"{mins}m"
    if mins < 180:
        return f"{mins}m"
    hours = mins // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def _col(name, type_="string", priority=0, fmt=""):
    return {"name": name, "type": type_, "format": fmt, "description": "", "priority": priority}


def pod_status(pod):
    status = pod.get("status", {})
    reason = status.get("reason") or status.get("phase", "Unknown")
    for cs in status.get("initContainerStatuses", []):
        state = cs.get("state", {})
        if state.get("terminated", {}).get("exitCode", 0) != 0:
            reason = "Init:" + (state["terminated"].get("reason") or "Error")
            break
        if state.get("waiting", {}).get("reason") not in (None, "PodInitializing"):
            reason = "Init:" + state["waiting"]["reason"]
            break
        if not state.get("terminated"):
            reason = "Init:0/1" if state.get("running") is None else "Init:Running"
            break
    else:
        for cs in status.get("containerStatuses", []):
            state = cs.get("state", {})
            if state.get("waiting", {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif state.get("terminated"):
                reason = state["terminated"].get("reason") or f"ExitCode:{state['terminated'].get('exitCode')}"
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _pod_row(pod):
    statuses = pod.get("status", {}).get("containerStatuses", [])
    ready = sum(1 for c in statuses if c.get("ready"))
    total = len(pod.get("spec", {}).get("containers", []))
    restarts = sum(c.get("restartCount", 0) for c in statuses)
    return [pod["metadata"]["name"], f"{ready}/{total}", pod_status(pod), restarts,
            age(pod["metadata"].get("creationTimestamp")),
            pod.get("status", {}).get("podIP") or "<none>", pod.get("spec", {}).get("nodeName") or "<none>",
            "<none>", "<none>"]


def _node_row(node):
    conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
    status = "Ready" if conds.get("Ready") == "True" else "NotReady"
    if node.get("spec", {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    info = node.get("status", {}).get("nodeInfo", {})
    ip = next((a["address"] for a in node.get("status", {}).get("addresses", []) if a["type"] == "InternalIP"), "<none>")
    return [node["metadata"]["name"], status, "<none>", age(node["metadata"].get("creationTimestamp")),
            info.get("kubeletVersion", ""), ip, "<none>", info.get("osImage", ""),
            info.get("kernelVersion", ""), info.get("containerRuntimeVersion", "")]


def _job_row(job):
    status = job.get("status", {})
    conds = {c["type"]: c["status"] for c in status.get("conditions", [])}
    state = ("Complete" if conds.get("Complete") == "True" else "Failed" if conds.get("Failed") == "True"
             else "Suspended" if conds.get("Suspended") == "True" else "Running")
    completions = f"{status.get('succeeded', 0)}/{job.get('spec', {}).get('completions', 1)}"
    start, end = status.get("startTime"), status.get("completionTime")
    duration = ""
    if start:
        secs = int(((parse_time(end) if end else utcnow()) - parse_time(start)).total_seconds())
        duration = f"{secs}s" if secs < 120 else f"{secs // 60}m"
    return [job["metadata"]["name"], state, completions, duration, age(job["metadata"].get("creationTimestamp"))]


def _event_row(ev):
    inv = ev.get("involvedObject", {})
    return [age(ev.get("lastTimestamp") or ev["metadata"].get("creationTimestamp")), ev.get("type", ""),
            ev.get("reason", ""), f"{inv.get('kind', '').lower()}/{inv.get('name', '')}", ev.get("message", "")]


def _service_row(svc):
    spec = svc.get("spec", {})
    ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports", [])) or "<none>"
    return [svc["metadata"]["name"], spec.get("type", "ClusterIP"), spec.get("clusterIP", "<none>"), "<none>",
            ports, age(svc["metadata"].get("creationTimestamp"))]


def _first_three(items):
    """kubectl's list of endpoints: three, then "+ N more..."."""
    if not items:
        return "<none>"
    more = f" + {len(items) - 3} more..." if len(items) > 3 else ""
    return ",".join(items[:3]) + more


def _endpoints_row(ep):
    items = []
    for ss in ep.get("subsets") or []:
        ports = ss.get("ports") or []
        for addr in ss.get("addresses") or []:
            items += [f"{addr['ip']}:{p['port']}" for p in ports] if ports else [addr["ip"]]
    return [ep["metadata"]["name"], _first_three(items), age(ep["metadata"].get("creationTimestamp"))]


def _endpointslice_row(obj):
    ports = ",".join(str(p.get("port")) for p in obj.get("ports") or []) or "<unset>"
    ips = [ip for e in obj.get("endpoints") or [] for ip in e.get("addresses") or []]
    return [obj["metadata"]["name"], obj.get("addressType", ""), ports, _first_three(ips),
            age(obj["metadata"].get("creationTimestamp"))]


def _pvc_row(pvc):
    st = pvc.get("status", {})
    return [pvc["metadata"]["name"], st.get("phase", "Pending"), pvc.get("spec", {}).get("volumeName", ""),
            st.get("capacity", {}).get("storage", ""), ",".join(
                {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX"}.get(m, m)
                for m in st.get("accessModes", [])),
            pvc.get("spec", {}).get("storageClassName", ""), "<unset>", age(pvc["metadata"].get("creationTimestamp"))]


def _apiservice_row(obj):
    service = (obj.get("spec") or {}).get("service")
    cond = next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == "Available"),
                None)
    if cond is None:
        available = "Unknown"
    elif cond.get("status") == "True":
        available = "True"
    else:
        available = f"{cond.get('status')} ({cond.get('reason')})"
    return [obj["metadata"]["name"], f"{service.get('namespace')}/{service.get('name')}" if service else "Local",
            available, age(obj["metadata"].get("creationTimestamp"))]


PRINTERS = {
    ("", "pods"): ([_col("Name", fmt="name"), _col("Ready"), _col("Status"), _col("Restarts", "integer"),
                    _col("Age"), _col("IP", priority=1), _col("Node", priority=1),
                    _col("Nominated Node", priority=1), _col("Readiness Gates", priority=1)], _pod_row),
    ("", "nodes"): ([_col("Name", fmt="name"), _col("Status"), _col("Roles"), _col("Age"), _col("Version"),
                     _col("Internal-IP", priority=1), _col("External-IP", priority=1),
                     _col("OS-Image", priority=1), _col("Kernel-Version", priority=1),
                     _col("Container-Runtime", priority=1)], _node_row),
    ("batch", "jobs"): ([_col("Name", fmt="name"), _col("Status"), _col("Completions"), _col("Duration"),
                         _col("Age")], _job_row),
    ("", "events"): ([_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message")], _event_row),
    ("", "services"): ([_col("Name", fmt="name"), _col("Type"), _col("Cluster-IP"), _col("External-IP"),
                        _col("Port(s)"), _col("Age")], _service_row),
    ("", "endpoints"): ([_col("Name", fmt="name"), _col("Endpoints"), _col("Age")], _endpoints_row),
    ("discovery.k8s.io", "endpointslices"): ([_col("Name", fmt="name"), _col("AddressType"), _col("Ports"),
                                              _col("Endpoints"), _col("Age")], _endpointslice_row),
    ("", "persistentvolumeclaims"): ([_col("Name", fmt="name"), _col("Status"), _col("Volume"), _col("Capacity"),
                                      _col("Access Modes"), _col("StorageClass"), _col("VolumeAttributesClass"),
                                      _col("Age")], _pvc_row),
    ("apiregistration.k8s.io", "apiservices"): ([_col("Name", fmt="name"), _col("Service"), _col("Available"),
                                                 _col("Age")], _apiservice_row),
    ("", "namespaces"): ([_col("Name", fmt="name"), _col("Status"), _col("Age")],
                         lambda o: [o["metadata"]["name"], o.get("status", {}).get("phase", ""),
                                    age(o["metadata"].get("creationTimestamp"))]),
}


def _json_path(obj, path):
    cur = obj
    for part in path.strip().lstrip(".").split("."):
        if not part:
            continue
        if part.endswith("]") and "[" in part:
            name, idx = part[:-1].split("[", 1)
            cur = cur.get(name) if isinstance(cur, dict) else None
            try:
                cur = cur[int(idx)] if isinstance(cur, list) else None
            except (ValueError, IndexError):
                cur = None
        else:
            cur = cur.get(part) if isinstance(cur, dict) else None
        if cur is None:
            return None
    return cur


def _printer(res):
    if res.key in PRINTERS:
        return PRINTERS[res.key]
    if res.printer_columns:
        cols = [dict(c) for c in res.printer_columns]
        defs = [_col("Name", fmt="name")] + [
            _col(c["name"], c.get("type", "string"), c.get("priority", 0), c.get("format", "")) for c in cols]

        def row(obj):
            cells = [obj["metadata"]["name"]]
            for c in cols:
                value = _json_path(obj, c["jsonPath"])
                if c.get("type") == "date" and value:
                    value = age(value)
                cells.append(value)
            return cells

        return defs, row
    return [_col("Name", fmt="name"), _col("Age")], lambda o: [o["metadata"]["name"],
                                                               age(o["metadata"].get("creationTimestamp"))]


def wants_table(accept):
    return "as=Table" in (accept or "")


def table(res, items, resource_version, include_object="Metadata"):
    defs, row = _printer(res)
    rows = []
    for obj in items:
        entry = {"cells": row(obj)}
        if include_object == "Object":
            entry["object"] = obj
        elif include_object != "None":
            entry["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                               "metadata": obj["metadata"]}
        rows.append(entry)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": defs, "rows": rows}
