"""Recording core/v1 Events the way kube components do (same reasons, same wording).

Repeated events for the same object and reason are folded into one Event with a growing
``count`` and a fresh ``lastTimestamp``, as the real event recorder does.
"""

import hashlib

from .store import isotime


def record(store, obj, reason, message, type_="Normal", component="kubelet", host=None):
    """Record an Event about ``obj`` (any namespaced or cluster object dict)."""
    registry = store.registry
    res = registry.lookup("", "v1", "events")
    meta = obj["metadata"]
    namespace = meta.get("namespace") or "default"
    digest = hashlib.sha1(f"{meta['uid']}/{reason}/{message}".encode()).hexdigest()[:10]
    name = f"{meta['name']}.{digest}"
    now = isotime()
    existing = store.find(res, namespace, name)
    if existing is not None:

        def bump(ev):
            ev["count"] = ev.get("count", 1) + 1
            ev["lastTimestamp"] = now

        return store.mutate(res, namespace, name, bump)
    source = {"component": component}
    if host:
        source["host"] = host
    event = {
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {
            "kind": obj.get("kind"),
            "apiVersion": obj.get("apiVersion"),
            "namespace": meta.get("namespace"),
            "name": meta["name"],
            "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message,
        "type": type_,
        "source": source,
        "reportingComponent": component,
        "reportingInstance": host or "",
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "eventTime": None,
    }
    return store.create(res, event, namespace)
