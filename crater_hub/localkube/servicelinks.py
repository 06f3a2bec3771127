"""Service links: the ``<NAME>_SERVICE_HOST``-style variables a kubelet gives every container.

z2jh's hub config finds the proxy's API and its own Service through them
(``PROXY_API_SERVICE_PORT``, ``HUB_SERVICE_HOST``), so a hub in a pod needs them. As the kubelet
does (``pkg/kubelet/envvars``): for every Service of the pod's namespace that has a cluster IP when
the container starts, when ``enableServiceLinks`` is true (the default); the container's own env
wins over them. ``KUBERNETES_SERVICE_*`` stay the kubelet's (localkube's API).
"""


def _env_name(name):
    return name.upper().replace("-", "_")


def service_env(service):
    """The variables one Service contributes, in the kubelet's order."""
    spec = service.get("spec") or {}
    ip = spec.get("clusterIP")
    ports = spec.get("ports") or []
    if not ip or ip == "None" or not ports:
        return {}
    name = _env_name(service["metadata"]["name"])
    env = {f"{name}_SERVICE_HOST": ip, f"{name}_SERVICE_PORT": str(ports[0]["port"])}
    for p in ports:
        if p.get("name"):
            env[f"{name}_SERVICE_PORT_{_env_name(p['name'])}"] = str(p["port"])
    first = ports[0]
    env[f"{name}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
    for p in ports:
        proto = p.get("protocol", "TCP")
        prefix = f"{name}_PORT_{p['port']}_{proto.upper()}"
        env[prefix] = f"{proto.lower()}://{ip}:{p['port']}"
        env[f"{prefix}_PROTO"] = proto.lower()
        env[f"{prefix}_PORT"] = str(p["port"])
        env[f"{prefix}_ADDR"] = ip
    return env


def service_links(store, registry, pod):
    """All service-link variables for a container of ``pod`` (empty with enableServiceLinks off)."""
    if (pod.get("spec") or {}).get("enableServiceLinks") is False:
        return {}
    ns = pod["metadata"]["namespace"]
    env = {}
    services = sorted((s for s in store.iter_raw(registry.lookup("", "v1", "services"))
                       if s["metadata"].get("namespace") == ns and s["metadata"]["name"] != "kubernetes"),
                      key=lambda s: s["metadata"]["name"])
    for svc in services:
        env.update(service_env(svc))
    return env
