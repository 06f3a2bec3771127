"""The object store: every API object, a global resourceVersion and the change history.

Everything runs on one asyncio loop, so each operation here is a synchronous, atomic step: read,
check, write, bump the version, append to the history, notify. Watches replay from the history and
then follow live changes; controllers (scheduler, kubelet, job controller, garbage collector)
subscribe with :meth:`Store.listen` and act on the same events.

Objects are plain JSON dicts; callers always get deep copies, so nothing outside the store can
change stored state without going through it.
"""

import asyncio
import copy
import re
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from . import defaults
from .clusterip import DEFAULT_SERVICE_CIDR, ClusterIPAllocator
from .errors import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    gone,
    invalid,
    not_found,
)
from .selectors import MATCH_ALL

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_NAMES = {"namespaces", "services"}  # kinds whose names must be DNS-1123 labels
PATH_SEGMENT_NAMES = {"apiservices"}  # kinds whose names need only be a path segment ("v1.")

# Kinds whose REST DELETE orphans dependents unless told otherwise (a batch/v1 legacy default).
ORPHAN_BY_DEFAULT = {("batch", "jobs")}


def utcnow():
    return datetime.now(timezone.utc)


def isotime(dt=None):
    return (dt or utcnow()).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text):
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


@dataclass
class Change:
    """One committed change: what a watch event is made from."""

    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    skey: tuple  # storage key (group, plural)
    obj: dict
    old: dict | None = None


class Watcher:
    """A live subscription: a queue of :class:`Change` (or an ApiError) for one watch request."""

    def __init__(self, store, skey, namespace, selector):
        self.store = store
        self.skey = skey
        self.namespace = namespace
        self.selector = selector
        self.queue = asyncio.Queue()

    def offer(self, change):
        """Translate a change into the event this watcher sees, honouring selectors."""
        if change.skey != self.skey:
            return
        ns = change.obj["metadata"].get("namespace")
        if self.namespace and ns != self.namespace:
            return
        new_match = self.selector.matches(change.obj)
        old_match = self.selector.matches(change.old) if change.old is not None else False
        etype = change.type
        if etype == "MODIFIED":
            if new_match and not old_match:
                etype = "ADDED"
            elif old_match and not new_match:
                etype = "DELETED"
            elif not new_match:
                return
        elif not new_match:
            return
        self.queue.put_nowait((etype, change.obj))

    def close(self):
        self.store._watchers.discard(self)


class Store:
    """All objects of all kinds, keyed by storage key, then (namespace, name)."""

    def __init__(self, registry, history_size=10000, service_cidr=DEFAULT_SERVICE_CIDR):
        self.registry = registry
        # Service cluster IPs are handed out at create, by the API server (defaults.py).
        self.service_ips = ClusterIPAllocator(service_cidr)
        self.rv = 0
        self.history = deque()
        self.history_size = history_size
        self.compacted_rv = 0  # changes at or below this version are no longer replayable
        self._objects = {}
        self._watchers = set()
        self._listeners = [self.service_ips.on_change]

    # -- reading -----------------------------------------------------------------------------

    def _bucket(self, res):
        return self._objects.setdefault(self.registry.storage_key(res), {})

    def _view(self, res, obj):
        """A copy of ``obj`` as served by ``res`` (apiVersion of the requested version)."""
        out = copy.deepcopy(obj)
        out["apiVersion"] = res.api_version
        out["kind"] = res.kind
        return out

    def get(self, res, namespace, name):
        """The object, or raise 404."""
        obj = self._bucket(res).get((namespace if res.namespaced else None, name))
        if obj is None:
            raise not_found(res, name)
        return self._view(res, obj)

    def find(self, res, namespace, name):
        """The object or None."""
        obj = self._bucket(res).get((namespace if res.namespaced else None, name))
        return None if obj is None else self._view(res, obj)

    def list(self, res, namespace=None, selector=MATCH_ALL):
        """(items sorted by namespace/name, the list's resourceVersion)."""
        bucket = self._bucket(res)
        items = [
            self._view(res, obj)
            for (ns, _), obj in sorted(bucket.items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))
            if (not namespace or ns == namespace) and selector.matches(obj)
        ]
        return items, str(self.rv)

    def iter_raw(self, res):
        """Stored objects of a kind, without copying. Callers must not modify them."""
        return list(self._bucket(res).values())

    # -- writing -----------------------------------------------------------------------------

    def _commit(self, etype, skey, obj, old=None):
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        change = Change(self.rv, etype, skey, copy.deepcopy(obj), old)
        self.history.append(change)
        while len(self.history) > self.history_size:
            self.compacted_rv = self.history.popleft().rv
        for watcher in list(self._watchers):
            watcher.offer(change)
        for listener in list(self._listeners):
            listener(change)
        return obj

    def _check_namespace(self, res, namespace):
        if not res.namespaced:
            return
        ns_res = self.registry.lookup("", "v1", "namespaces")
        ns = self._bucket(ns_res).get((None, namespace))
        if ns is None:
            raise not_found(ns_res, namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise forbidden(
                f'{res.plural} "..." is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated"
            )

    def create(self, res, body, namespace=None):
        """Create ``body`` (a dict); return the stored object. 409 if the name is taken."""
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            namespace = namespace or meta.get("namespace") or "default"
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
            namespace = None
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise invalid(res, "", [("metadata.name", "Required value: name or generateName is required")])
            bucket = self._bucket(res)
            for _ in range(100):
                candidate = meta["generateName"] + uuid.uuid4().hex[:5]
                if (namespace, candidate) not in bucket:
                    meta["name"] = candidate
                    break
        name = meta["name"]
        pattern = DNS_LABEL if res.plural in LABEL_NAMES else DNS_SUBDOMAIN
        if res.plural in PATH_SEGMENT_NAMES:
            if name in (".", "..") or "/" in name or "%" in name:
                raise invalid(res, name, [("metadata.name", f'Invalid value: "{name}": may not be '
                                           "'.' or '..' and may not contain '/' or '%'")])
        elif len(name) > (63 if res.plural in LABEL_NAMES else 253) or not pattern.match(name):
            raise invalid(
                res, name,
                [("metadata.name", "Invalid value: a lowercase RFC 1123 name must consist of lower case "
                  "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")],
            )
        self._check_namespace(res, namespace)
        bucket = self._bucket(res)
        if (namespace, name) in bucket:
            raise already_exists(res, name)
        obj["apiVersion"] = res.api_version
        obj["kind"] = res.kind
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = isotime()
        meta["generation"] = 1
        for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(key, None)
        defaults.apply_on_create(self, res, obj)
        causes = defaults.validate(res, obj)
        if causes:
            raise invalid(res, name, causes)
        bucket[(namespace, name)] = obj
        self._commit("ADDED", self.registry.storage_key(res), obj)
        return self._view(res, obj)

    def replace(self, res, body, namespace, name, subresource=None):
        """Replace an object (PUT). A stale ``metadata.resourceVersion`` is a 409 Conflict."""
        bucket = self._bucket(res)
        key = (namespace if res.namespaced else None, name)
        current = bucket.get(key)
        if current is None:
            raise not_found(res, name)
        body = copy.deepcopy(body)
        meta = body.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != name:
            raise bad_request("the name of the object does not match the name on the URL")
        sent_rv = meta.get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise conflict(res, name)
        if meta.get("uid") and meta["uid"] != current["metadata"]["uid"]:
            raise conflict(res, name, "Precondition failed: UID in precondition does not match UID in object")
        new = copy.deepcopy(current)
        if subresource == "status":
            new["status"] = body.get("status", {})
        else:
            keep = {
                k: current["metadata"][k]
                for k in ("uid", "creationTimestamp", "namespace", "name", "generation",
                          "deletionTimestamp", "deletionGracePeriodSeconds")
                if k in current["metadata"]
            }
            new = {k: v for k, v in body.items() if k != "status"}
            new["metadata"] = {**meta, **keep}
            if res.has_status or res.plural == "pods":
                if "status" in current:
                    new["status"] = current["status"]
            elif "status" in body:
                new["status"] = body["status"]
            new["apiVersion"] = current["apiVersion"]
            new["kind"] = current["kind"]
            if new.get("spec") != current.get("spec"):
                new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
            causes = defaults.validate(res, new)
            if causes:
                raise invalid(res, name, causes)
            defaults.check_update(res, current, new)
        return self._write(res, key, current, new)

    def _write(self, res, key, current, new):
        if new == current:
            return self._view(res, current)
        bucket = self._bucket(res)
        if self._removable(res, new):
            bucket.pop(key)
            self._commit("DELETED", self.registry.storage_key(res), new, old=current)
            return self._view(res, new)
        bucket[key] = new
        self._commit("MODIFIED", self.registry.storage_key(res), new, old=current)
        return self._view(res, new)

    @staticmethod
    def _removable(res, obj):
        """Whether a deleted object may go now: no finalizers left and nothing still running."""
        meta = obj["metadata"]
        if not meta.get("deletionTimestamp") or meta.get("finalizers"):
            return False
        if res.key == ("", "namespaces"):
            return False  # the namespace controller removes it once it is empty
        if res.key == ("", "pods"):
            return (meta.get("deletionGracePeriodSeconds") == 0
                    or not obj.get("spec", {}).get("nodeName")
                    or obj.get("status", {}).get("phase") in ("Succeeded", "Failed"))
        return True

    def mutate(self, res, namespace, name, fn, subresource=None):
        """Read-modify-write for controllers: ``fn(obj)`` changes a copy in place.

        Returns the stored object, or None when the object no longer exists.
        """
        key = (namespace if res.namespaced else None, name)
        current = self._bucket(res).get(key)
        if current is None:
            return None
        new = copy.deepcopy(current)
        fn(new)
        if subresource != "status" and new.get("spec") != current.get("spec"):
            new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        return self._write(res, key, current, new)

    def delete(self, res, namespace, name, grace=None, propagation=None, preconditions=None):
        """Delete (REST semantics): graceful for running pods, finalizers honoured.

        Returns the object as it stands after the call: marked with ``deletionTimestamp`` when its
        removal is deferred, or as last seen when it is gone.
        """
        key = (namespace if res.namespaced else None, name)
        current = self._bucket(res).get(key)
        if current is None:
            raise not_found(res, name)
        pre = preconditions or {}
        if pre.get("uid") and pre["uid"] != current["metadata"]["uid"]:
            raise conflict(res, name, "Precondition failed: UID in precondition does not match UID in object")
        if pre.get("resourceVersion") and pre["resourceVersion"] != current["metadata"]["resourceVersion"]:
            raise conflict(res, name, "Precondition failed: ResourceVersion in precondition does not match")
        if propagation is None and self.registry.storage_key(res) in ORPHAN_BY_DEFAULT:
            propagation = "Orphan"
        if propagation not in (None, "Background", "Foreground", "Orphan"):
            raise bad_request(f"unsupported propagationPolicy {propagation!r}: Background, Foreground or Orphan")
        new = copy.deepcopy(current)
        meta = new["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if propagation == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if propagation == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        if finalizers:
            meta["finalizers"] = finalizers
        deferred = bool(finalizers)
        if res.plural == "namespaces" and res.group == "":
            deferred = True
            new.setdefault("status", {})["phase"] = "Terminating"
        if res.plural == "pods" and res.group == "":
            if grace is None:
                grace = new.get("spec", {}).get("terminationGracePeriodSeconds", 30)
            running = new.get("spec", {}).get("nodeName") and new.get("status", {}).get("phase") not in (
                "Succeeded", "Failed")
            if grace > 0 and running:
                deferred = True
                if meta.get("deletionTimestamp"):
                    # Already terminating: a shorter grace period may only shorten the wait.
                    grace = min(grace, meta.get("deletionGracePeriodSeconds", grace))
                meta["deletionGracePeriodSeconds"] = grace
        if deferred:
            if not meta.get("deletionTimestamp") or res.plural == "pods":
                meta["deletionTimestamp"] = isotime(utcnow() + timedelta(seconds=grace or 0))
            if new == current:
                return self._view(res, current)
            self._bucket(res)[key] = new
            self._commit("MODIFIED", self.registry.storage_key(res), new, old=current)
            return self._view(res, new)
        return self.remove(res, namespace, name)

    def remove(self, res, namespace, name):
        """Remove at once (the end of a graceful deletion, or grace 0). Emits DELETED.

        An object that still has finalizers is only marked (grace 0); it goes when they are removed.
        """
        key = (namespace if res.namespaced else None, name)
        current = self._bucket(res).get(key)
        if current is None:
            return None
        if current["metadata"].get("finalizers"):
            new = copy.deepcopy(current)
            new["metadata"].setdefault("deletionTimestamp", isotime())
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._write(res, key, current, new)
        self._bucket(res).pop(key)
        gone_obj = copy.deepcopy(current)
        gone_obj["metadata"].setdefault("deletionTimestamp", isotime())
        self._commit("DELETED", self.registry.storage_key(res), gone_obj, old=current)
        return self._view(res, gone_obj)

    def drop_kind(self, res):
        """Delete every object of a kind (when its CRD goes away)."""
        for (ns, name) in list(self._bucket(res)):
            self.remove(res, ns, name)

    # -- watching ----------------------------------------------------------------------------

    def listen(self, callback):
        """Call ``callback(change)`` synchronously after every commit (for controllers)."""
        self._listeners.append(callback)

    def watch(self, res, namespace=None, selector=MATCH_ALL, since=None):
        """Open a watch. ``since=None`` or ``"0"`` starts with the current state as ADDED events.

        Raises a 410 ApiError (the caller sends it in-stream) when ``since`` is older than the
        retained history.
        """
        skey = self.registry.storage_key(res)
        watcher = Watcher(self, skey, namespace, selector)
        if since in (None, "", "0"):
            items, _ = self.list(res, namespace, selector)
            for item in items:
                watcher.queue.put_nowait(("ADDED", item))
        else:
            try:
                since_rv = int(since)
            except ValueError:
                raise bad_request(f"invalid resource version {since!r}") from None
            if since_rv < self.compacted_rv:
                raise gone(f"too old resource version: {since_rv} ({self.compacted_rv + 1})")
            for change in self.history:
                if change.rv > since_rv:
                    watcher.offer(change)
        self._watchers.add(watcher)
        return watcher

    def view(self, res, obj):
        return self._view(res, obj)


__all__ = ["ApiError", "Store", "Change", "Watcher", "isotime", "parse_time", "utcnow"]
