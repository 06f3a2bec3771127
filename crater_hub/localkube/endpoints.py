"""Which pods back a Service, and the controller that publishes it as Endpoints and EndpointSlices.

Everything that needs a Service's backends reads them from here: the endpoints controller writes
them into ``v1`` Endpoints and ``discovery.k8s.io/v1`` EndpointSlices (what kubectl and clients
read), the service proxy and the DNS server read those objects, and the aggregator computes the
same subsets directly (it must not lag a pod's readiness by a reconcile).

The rules are kube-controller-manager's: a pod counts when its labels match the Service's
selector, it has a pod IP and it is not finished; it is ready when its ``Ready`` condition is True
and it is not being deleted. Endpoints list ready pods in ``addresses`` and the others in
``notReadyAddresses`` (all in ``addresses`` with ``publishNotReadyAddresses``), leave terminating
pods out, and group addresses with the same resolved ports into one subset. EndpointSlices keep
terminating pods with ``ready: false, terminating: true``. A named ``targetPort`` is resolved on
each pod, so pods of one Service may differ; a pod that has none of the named ports is left out.
A Service without a selector keeps the Endpoints its owner writes; its slices mirror them, as the
endpointslice-mirroring controller does.
"""

import logging

from .controller import Controller

log = logging.getLogger("localkube")

SERVICES = ("", "services")
ENDPOINTS = ("", "endpoints")
PODS = ("", "pods")
SLICES = ("discovery.k8s.io", "endpointslices")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
SLICE_CONTROLLER = "endpointslice-controller.k8s.io"
MIRROR_CONTROLLER = "endpointslicemirroring-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"


# -- pure rules ---------------------------------------------------------------------------------


def selector_matches(selector, labels):
    """A Service selector (a plain map) matches ``labels``; an empty selector matches nothing."""
    return bool(selector) and all((labels or {}).get(k) == v for k, v in selector.items())


def pod_ready(pod):
    """Whether a pod may receive traffic: Ready, with an IP, not finished and not being deleted."""
    status = pod.get("status") or {}
    if pod["metadata"].get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
        return False
    if not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or [])


def _ready_condition(pod):
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def target_port(svc_port, pod):
    """The pod's port a Service port sends to: a number, or a named containerPort; None if absent."""
    target = svc_port.get("targetPort", svc_port.get("port"))
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return port.get("containerPort")
    return None


def is_headless(svc):
    return (svc.get("spec") or {}).get("clusterIP") == "None"


def backends(store, registry, svc):
    """The pods backing a selector Service: a list of dicts (pod, ip, ready, terminating, ports).

    ``ports`` are ``EndpointPort``-shaped ({name, port, protocol}) with targetPorts resolved on
    the pod. Pods without an IP or finished are not listed; nor are pods lacking every port the
    Service names (a headless Service without ports lists every pod, with no ports).
    """
    spec = svc.get("spec") or {}
    ns = svc["metadata"]["namespace"]
    out = []
    svc_ports = spec.get("ports") or []
    for pod in store.iter_raw(registry.lookup("", "v1", "pods")):
        meta = pod["metadata"]
        status = pod.get("status") or {}
        if meta.get("namespace") != ns or not selector_matches(spec.get("selector"), meta.get("labels")):
            continue
        if not status.get("podIP") or status.get("phase") in ("Succeeded", "Failed"):
            continue
        ports = []
        for p in svc_ports:
            target = target_port(p, pod)
            if target:
                ports.append({"name": p.get("name", ""), "port": target, "protocol": p.get("protocol", "TCP")})
        if svc_ports and not ports:
            continue
        out.append({"pod": pod, "ip": status["podIP"], "ports": ports,
                    "ready": pod_ready(pod), "terminating": bool(meta.get("deletionTimestamp"))})
    return sorted(out, key=lambda b: (b["ip"], b["pod"]["metadata"]["name"]))


def _address(backend, svc):
    pod = backend["pod"]
    meta, spec = pod["metadata"], pod.get("spec") or {}
    address = {"ip": backend["ip"]}
    if spec.get("hostname") and spec.get("subdomain") == svc["metadata"]["name"]:
        address["hostname"] = spec["hostname"]
    if spec.get("nodeName"):
        address["nodeName"] = spec["nodeName"]
    address["targetRef"] = {"kind": "Pod", "namespace": meta["namespace"], "name": meta["name"],
                            "uid": meta["uid"]}
    return address


def _ports_key(ports):
    return tuple(sorted((p["name"], p["port"], p["protocol"]) for p in ports))


def desired_subsets(store, registry, svc):
    """``Endpoints.subsets`` for a selector Service, as the endpoints controller packs them."""
    publish_all = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
    groups = {}
    for b in backends(store, registry, svc):
        if b["terminating"] and not publish_all:
            continue
        subset = groups.setdefault(_ports_key(b["ports"]), {"ports": b["ports"]})
        field = "addresses" if b["ready"] or publish_all else "notReadyAddresses"
        subset.setdefault(field, []).append(_address(b, svc))
    subsets = []
    for _, subset in sorted(groups.items()):
        ordered = {k: subset[k] for k in ("addresses", "notReadyAddresses") if k in subset}
        if subset["ports"]:
            ordered["ports"] = sorted(subset["ports"], key=lambda p: p["name"])
        subsets.append(ordered)
    return subsets


def service_subsets(store, registry, svc):
    """The Service's endpoints as ``Endpoints.subsets``; None when it has no Endpoints object.

    A Service with a selector gets the subsets the endpoints controller writes (computed now, not
    read back); a selector-less one has the Endpoints object of its name, written by its owner.
    """
    if (svc.get("spec") or {}).get("selector"):
        return desired_subsets(store, registry, svc)
    ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
    ep = store.find(registry.lookup("", "v1", "endpoints"), ns, name)
    return None if ep is None else ep.get("subsets") or []


def ready_addresses(subsets, port_name=None):
    """[(ip, port or None, hostname or None)] of the ready addresses; ``port_name`` picks a port."""
    out = []
    for ss in subsets or []:
        ports = ss.get("ports") or []
        if port_name is not None:
            ports = [p for p in ports if p.get("name", "") == port_name]
            if not ports:
                continue
        for addr in ss.get("addresses") or []:
            if addr.get("ip"):
                out.append((addr["ip"], ports[0]["port"] if ports else None, addr.get("hostname")))
    return out


def _slice_endpoint(address, ready, serving, terminating):
    out = {"addresses": [address["ip"]],
           "conditions": {"ready": ready, "serving": serving, "terminating": terminating}}
    for key in ("hostname", "nodeName", "targetRef"):
        if address.get(key):
            out[key] = address[key]
    return out


def desired_slices(store, registry, svc):
    """{ports key: (ports, endpoints)} of the EndpointSlices a Service should have.

    One slice per distinct set of resolved ports (the real controller also caps a slice at 100
    endpoints; localkube never splits). A Service with no endpoints keeps one empty slice.
    """
    groups = {}
    if (svc.get("spec") or {}).get("selector"):
        for b in backends(store, registry, svc):
            ports, endpoints = groups.setdefault(_ports_key(b["ports"]), (b["ports"], []))
            serving = _ready_condition(b["pod"]) if b["terminating"] else b["ready"]
            endpoints.append(_slice_endpoint(_address(b, svc), b["ready"], serving, b["terminating"]))
    else:
        for ss in service_subsets(store, registry, svc) or []:
            ports = [{"name": p.get("name", ""), "port": p.get("port"), "protocol": p.get("protocol", "TCP")}
                     for p in ss.get("ports") or []]
            _, endpoints = groups.setdefault(_ports_key(ports), (ports, []))
            for addr in ss.get("addresses") or []:
                endpoints.append(_slice_endpoint(addr, True, True, False))
            for addr in ss.get("notReadyAddresses") or []:
                endpoints.append(_slice_endpoint(addr, False, False, False))
    if not groups:
        groups[()] = ([], [])
    return groups


# -- the controller -----------------------------------------------------------------------------


class EndpointsController(Controller):
    """Keeps each Service's Endpoints (selector Services) and EndpointSlices (all ClusterIP kinds).

    Work keys are Services; a pod's change enqueues every Service in its namespace whose selector
    matches the pod's old or new labels, so readiness flips reach the objects within one loop turn.
    """

    watches = (SERVICES,)

    def keys_for(self, change):
        meta = change.obj["metadata"]
        ns = meta.get("namespace")
        if change.skey == SERVICES:
            return [(SERVICES, ns, meta["name"])]
        if change.skey == PODS:
            labels = [meta.get("labels")] + ([change.old["metadata"].get("labels")] if change.old else [])
            return [(SERVICES, ns, svc["metadata"]["name"])
                    for svc in self.store.iter_raw(self.res("", "services"))
                    if svc["metadata"].get("namespace") == ns
                    and any(selector_matches((svc.get("spec") or {}).get("selector"), la) for la in labels)]
        if change.skey == ENDPOINTS:
            svc = self.store.find(self.res("", "services"), ns, meta["name"])
            if svc is not None and not (svc.get("spec") or {}).get("selector"):
                return [(SERVICES, ns, meta["name"])]  # a hand-written Endpoints: mirror it
            if svc is not None and change.type == "DELETED":
                return [(SERVICES, ns, meta["name"])]  # ours, deleted by someone: write it again
            return []
        if change.skey == SLICES:
            name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
            return [(SERVICES, ns, name)] if name and change.type == "DELETED" else []
        return []

    @property
    def slices(self):
        return self.registry.lookup("discovery.k8s.io", "v1", "endpointslices")

    async def reconcile(self, key):
        _, ns, name = key
        svc = self.store.find(self.res("", "services"), ns, name)
        self._sync_endpoints(ns, name, svc)
        self._sync_slices(ns, name, svc)
        return None

    def _labels(self, svc):
        labels = dict(svc["metadata"].get("labels") or {})
        if is_headless(svc):
            labels[HEADLESS_LABEL] = ""
        return labels

    def _sync_endpoints(self, ns, name, svc):
        res = self.res("", "endpoints")
        current = self.store.find(res, ns, name)
        if svc is None or not (svc.get("spec") or {}).get("selector") \
                or (svc.get("spec") or {}).get("type") == "ExternalName":
            if svc is None and current is not None and (current["metadata"].get("labels") or {}) \
                    .get("endpoints.kubernetes.io/managed-by") == "endpoint-controller":
                self.store.delete(res, ns, name)
            return
        labels = {**self._labels(svc), "endpoints.kubernetes.io/managed-by": "endpoint-controller"}
        subsets = desired_subsets(self.store, self.registry, svc)
        if current is None:
            self.store.create(res, {"metadata": {"name": name, "namespace": ns, "labels": labels},
                                    **({"subsets": subsets} if subsets else {})}, ns)
            return

        def update(obj):
            obj["metadata"]["labels"] = labels
            if subsets:
                obj["subsets"] = subsets
            else:
                obj.pop("subsets", None)

        self.store.mutate(res, ns, name, update)

    def _sync_slices(self, ns, name, svc):
        res = self.slices
        existing = [o for o in self.store.iter_raw(res)
                    if o["metadata"].get("namespace") == ns
                    and (o["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) == name
                    and (o["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) in (SLICE_CONTROLLER,
                                                                                       MIRROR_CONTROLLER)]
        wanted = {}
        if svc is not None and (svc.get("spec") or {}).get("type") != "ExternalName":
            selector = (svc.get("spec") or {}).get("selector")
            if selector or service_subsets(self.store, self.registry, svc) is not None:
                wanted = desired_slices(self.store, self.registry, svc)
        manager = SLICE_CONTROLLER if svc is not None and (svc.get("spec") or {}).get("selector") \
            else MIRROR_CONTROLLER
        by_ports = {}
        for obj in existing:
            by_ports.setdefault(_ports_key(obj.get("ports") or []), []).append(obj)
        for ports_key, (ports, endpoints) in wanted.items():
            olds = by_ports.pop(ports_key, [])
            labels = {**self._labels(svc), SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: manager}
            body = {"addressType": "IPv4", "endpoints": endpoints,
                    "ports": sorted(ports, key=lambda p: p["name"]) or None}
            if olds:
                keep, extra = olds[0], olds[1:]
                for obj in extra:
                    self.store.delete(res, ns, obj["metadata"]["name"])

                def update(obj, body=body, labels=labels):
                    obj["metadata"]["labels"] = labels
                    obj.update(body)

                self.store.mutate(res, ns, keep["metadata"]["name"], update)
                continue
            owner = {"apiVersion": "v1", "kind": "Service", "name": name, "uid": svc["metadata"]["uid"],
                     "controller": True, "blockOwnerDeletion": True}
            self.store.create(res, {"metadata": {"generateName": f"{name}-", "namespace": ns, "labels": labels,
                                                 "ownerReferences": [owner]}, **body}, ns)
        for objs in by_ports.values():
            for obj in objs:
                self.store.delete(res, ns, obj["metadata"]["name"])
