"""Cluster housekeeping: CRD registration, garbage collection, namespace deletion, default SAs.

These are the kube-controller-manager and apiextensions parts localkube needs so that objects go
away the way clients expect: dependents follow their owners (Background, Foreground, Orphan),
a deleted namespace empties before it disappears, and a CRD serves its kind as soon as it exists.
"""

from .controller import Controller
from .resources import resources_from_crd

CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NS_KEY = ("", "namespaces")


class CRDController(Controller):
    """Registers served versions of a CRD synchronously, so a CR can be created right after."""

    def _on_change(self, change):
        if change.skey != CRD_KEY:
            return
        spec = change.obj.get("spec", {})
        group, plural = spec.get("group"), spec.get("names", {}).get("plural")
        if change.type == "DELETED":
            for res in [r for r in self.registry.all() if r.key == (group, plural)]:
                self.store.drop_kind(res)
            self.registry.remove_group_kind(group, plural)
            return
        self.registry.remove_group_kind(group, plural)
        for res in resources_from_crd(change.obj):
            self.registry.add(res)

    async def reconcile(self, key):
        return None


class ServiceAccountController(Controller):
    """Every namespace gets a ``default`` ServiceAccount, as the token controller ensures."""

    watches = (NS_KEY,)

    async def reconcile(self, key):
        _, _, name = key
        ns = self.store.find(self.res("", "namespaces"), None, name)
        if ns is None or ns["metadata"].get("deletionTimestamp"):
            return None
        sa = self.res("", "serviceaccounts")
        if self.store.find(sa, name, "default") is None:
            self.store.create(sa, {"metadata": {"name": "default", "namespace": name}}, name)
        return None


class GarbageCollector(Controller):
    """Deletes dependents whose owners are gone; runs Foreground and Orphan deletion.

    Keeps two indexes, updated from every change: uid → object location, and owner uid →
    dependents, so a deletion finds its dependents without scanning the store.
    """

    def __init__(self, cluster):
        super().__init__(cluster)
        self.where = {}  # uid -> (skey, namespace, name)
        self.dependents = {}  # owner uid -> set of dependent uids

    def keys_for(self, change):
        meta = change.obj["metadata"]
        uid = meta["uid"]
        old_owners = {r["uid"] for r in ((change.old or {}).get("metadata", {}).get("ownerReferences") or [])}
        for owner in old_owners:
            self.dependents.get(owner, set()).discard(uid)
        keys = []
        if change.type == "DELETED":
            self.where.pop(uid, None)
            keys.extend(("dependent", dep) for dep in self.dependents.pop(uid, set()))
            return keys
        self.where[uid] = (change.skey, meta.get("namespace"), meta["name"])
        owners = [r["uid"] for r in meta.get("ownerReferences") or []]
        for owner in owners:
            self.dependents.setdefault(owner, set()).add(uid)
        if owners and change.type == "ADDED":
            keys.append(("dependent", uid))
        finalizers = meta.get("finalizers") or []
        if meta.get("deletionTimestamp") and ("foregroundDeletion" in finalizers or "orphan" in finalizers):
            keys.append(("owner", uid))
        return keys

    def _resource(self, skey, api_version=None):
        for res in self.registry.all():
            if res.key == skey:
                return res
        return None

    def _load(self, uid):
        loc = self.where.get(uid)
        if loc is None:
            return None, None
        res = self._resource(loc[0])
        return res, (self.store.find(res, loc[1], loc[2]) if res else None)

    async def reconcile(self, key):
        kind, uid = key
        res, obj = self._load(uid)
        if obj is None:
            return None
        if kind == "dependent":
            owners = obj["metadata"].get("ownerReferences") or []
            alive = [r for r in owners if r["uid"] in self.where]
            if owners and not alive and not obj["metadata"].get("deletionTimestamp"):
                self.store.delete(res, obj["metadata"].get("namespace"), obj["metadata"]["name"],
                                  propagation="Background")
            return None
        # an owner being deleted in the Foreground or Orphan way
        finalizers = obj["metadata"].get("finalizers") or []
        deps = [self._load(d) for d in list(self.dependents.get(uid, ()))]
        deps = [(r, o) for r, o in deps if o is not None]
        if "orphan" in finalizers:
            for dres, dep in deps:
                self.store.mutate(dres, dep["metadata"].get("namespace"), dep["metadata"]["name"],
                                  lambda o: o["metadata"].__setitem__(
                                      "ownerReferences",
                                      [r for r in o["metadata"].get("ownerReferences", []) if r["uid"] != uid]))
            self._drop_finalizer(res, obj, "orphan")
            return None
        if "foregroundDeletion" in finalizers:
            pending = False
            for dres, dep in deps:
                pending = True
                if not dep["metadata"].get("deletionTimestamp"):
                    self.store.delete(dres, dep["metadata"].get("namespace"), dep["metadata"]["name"],
                                      propagation="Foreground")
            if pending:
                return 0.2
            self._drop_finalizer(res, obj, "foregroundDeletion")
        return None

    def _drop_finalizer(self, res, obj, name):
        def drop(o):
            o["metadata"]["finalizers"] = [f for f in o["metadata"].get("finalizers", []) if f != name]

        self.store.mutate(res, obj["metadata"].get("namespace"), obj["metadata"]["name"], drop)


class NamespaceController(Controller):
    """Empties a terminating namespace, then removes it."""

    watches = (NS_KEY,)

    async def reconcile(self, key):
        _, _, name = key
        ns_res = self.res("", "namespaces")
        ns = self.store.find(ns_res, None, name)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return None
        remaining = 0
        seen = set()
        for res in self.registry.all():
            skey = self.registry.storage_key(res)
            if not res.namespaced or skey != res.key or skey in seen:
                continue
            seen.add(skey)
            items, _ = self.store.list(res, name)
            for item in items:
                remaining += 1
                if not item["metadata"].get("deletionTimestamp"):
                    self.store.delete(res, name, item["metadata"]["name"], propagation="Background")
        if remaining:
            return 0.2
        self.store.remove(ns_res, None, name)
        return None
