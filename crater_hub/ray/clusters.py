"""The hub's RayClusters: one shared watch cache of them, the quota ledger kept true by it, and
the calls that create, scale and delete them with the hub's own service account.

Reads never go to the API: the list, one cluster, its readiness and its head's address all come
from the cache (one LIST, then a WATCH, for the whole hub). The ledger holds
``("ray", name)`` → the workers' GPUs for every cluster the cache has and that is not being
deleted, so after a hub restart the first LIST restores what clusters hold. A create or a scale
reserves in the ledger first — the check and the record in one synchronous step on the loop, as a
spawn does — and gives the reservation back if the API refuses.
"""

import asyncio
import base64
import logging
import math
import time

from kubernetes_asyncio.client.exceptions import ApiException

from ..kube.caches import WatchCache
from ..kube.client import api_message, shared_client
from ..kube.inventory import shared_inventory
from ..policy.ledger import RAY, Holding
from ..policy.workload import PolicyError
from . import manifests
from .idle import LAST_ACTIVITY, epoch

log = logging.getLogger("crater_hub.ray")


def ledger_key(name):
    return (RAY, name)


#: what to check when the API server refuses a RayCluster with this status
_HINTS = {404: "is KubeRay installed? Its RayCluster CRD is not served",
          403: "the hub's service account may not write RayClusters: see its RBAC in docs/deploy.md"}


def api_refusal(name, action, e):
    """The owner-facing refusal (503, reason ``ray``) of the API server's answer ``e`` to
    ``action`` on RayCluster ``name``: its status and message, and what to check."""
    hint = _HINTS.get(e.status)
    return PolicyError(f"Ray cluster {name} could not be {action}: the Kubernetes API answered "
                       f"{e.status} ({api_message(e)})" + (f"; {hint}" if hint else ""),
                       status=503, reason="ray")


class RayClusters:
    """The RayClusters of one namespace (the servers'), for one hub process and event loop."""

    def __init__(self, crater, namespace):
        self.crater = crater
        self.namespace = namespace
        self.inventory = shared_inventory(crater.accelerator_catalog())
        self.cache = WatchCache.shared(manifests.RAYCLUSTERS, namespace, manifests.SELECTOR)
        self.pods = WatchCache.shared("pods")
        self._tokens = {}  # (name, uid) -> token
        #: name -> epoch seconds of the last use this hub saw (dashboard proxy, running jobs);
        #: :mod:`.idle` writes it to the RayCluster now and then
        self.activity = {}
        #: names of the clusters whose jobs this hub's reaper has looked at (:func:`.idle.shown_warning`)
        self.looked = set()
        self.started = time.time()
        self.cache.add_listener(self._keep_ledger)
        for rc in self.cache:  # what the cache already has (listeners only hear of changes)
            self._keep_ledger("ADDED", rc, None)

    async def ready(self, timeout=30):
        await asyncio.gather(self.cache.ready(timeout), self.pods.ready(timeout),
                             self.inventory.ready(timeout=timeout))
        return self

    # -- reading (the cache) -----------------------------------------------------------------

    def get(self, name):
        return self.cache.get(name, self.namespace)

    def of(self, owner=None):
        """Every cluster (``owner`` None) or one owner's, oldest first."""
        found = [rc for rc in self.cache if owner is None or manifests.owner_of(rc) == owner]
        return sorted(found, key=lambda rc: (rc["metadata"].get("creationTimestamp") or "",
                                             rc["metadata"]["name"]))

    def server_pod(self, spawner):
        """The running pod of ``spawner`` (its ``metadata``), from the shared pod cache."""
        pod = self.pods.get(spawner.pod_name, spawner.namespace)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return None
        return pod["metadata"]

    def starting(self, rc):
        """Whether the head is not running yet (its time is not idle time)."""
        head = ((rc.get("status") or {}).get("head") or {}).get("podIP")
        return not head or manifests.conditions(rc).get("HeadPodReady") != "True"

    # -- use (for lifetime "idle", :mod:`.idle`) ------------------------------------------------

    def touch(self, name, when=None):
        """Note a use of cluster ``name`` now (or at ``when``, epoch seconds)."""
        when = time.time() if when is None else when
        self.activity[name] = max(when, self.activity.get(name, when))

    def last_activity(self, rc):
        """The last use known: this hub's, or the one stored on the RayCluster (None: never)."""
        stored = epoch((rc["metadata"].get("annotations") or {}).get(LAST_ACTIVITY))
        seen = self.activity.get(rc["metadata"]["name"])
        known = [t for t in (stored, seen) if t is not None]
        return max(known) if known else None

    def looked_at(self, rc):
        """Whether this hub knows ``rc``'s use since it started: its reaper has looked at the
        jobs, or the cluster is younger than this hub (no use went unseen)."""
        created = epoch(rc["metadata"].get("creationTimestamp"))
        return (rc["metadata"]["name"] in self.looked
                or (created is not None and created >= math.floor(self.started)))

    # -- the ledger --------------------------------------------------------------------------

    def holding(self, rc, workers=None):
        ann = rc["metadata"].get("annotations") or {}
        slug = ann.get(manifests.ANNOTATION + "accelerator")
        accelerator = next((a for a in self.inventory.accelerators() if a.slug == slug), None) if slug else None
        gpus = int(ann.get(manifests.ANNOTATION + "gpus") or 0)
        count = manifests.workers_of(rc) if workers is None else workers
        if accelerator is None or not gpus:
            return Holding(RAY)
        return Holding(RAY, accelerator, gpus * count)

    def _keep_ledger(self, event_type, rc, old):
        owner = manifests.owner_of(rc)
        if not owner:
            return
        key = ledger_key(rc["metadata"]["name"])
        if event_type == "DELETED" or rc["metadata"].get("deletionTimestamp"):
            self.crater.ledger.release(owner, key)
            self._tokens = {k: v for k, v in self._tokens.items() if k[0] != rc["metadata"]["name"]}
            self.activity.pop(rc["metadata"]["name"], None)
            self.looked.discard(rc["metadata"]["name"])
        else:
            self.crater.ledger.hold(owner, key, self.holding(rc))

    def reserve(self, owner, rc, quota):
        """Reserve what ``rc`` (not created yet) will hold, or raise 403 with the numbers: a Ray
        profile's spawn reserves before its server's pod exists (:mod:`.profile`)."""
        self._reserve(owner, rc, quota)

    def _reserve(self, owner, rc, quota, workers=None):
        """Reserve what ``rc`` holds with ``workers`` workers, or raise 403 with the numbers."""
        why = self.crater.ledger.reserve(owner, ledger_key(rc["metadata"]["name"]),
                                         self.holding(rc, workers), quota)
        if why:
            raise PolicyError(f"Over quota: {why}.", status=403, reason="quota")

    # -- writing (the API) -------------------------------------------------------------------

    async def create(self, owner, rc, quota):
        """Create ``rc`` after reserving its GPUs; 409 if the name is taken."""
        name = rc["metadata"]["name"]
        if self.get(name) is not None:
            raise PolicyError(f"name: a Ray cluster named {name} exists already", status=409)
        previous = self.crater.ledger.holds(owner, ledger_key(name))
        self._reserve(owner, rc, quota)
        try:
            created = await shared_client("CustomObjectsApi").create_namespaced_custom_object(
                manifests.GROUP, manifests.VERSION, self.namespace, manifests.PLURAL, rc)
        except ApiException as e:
            if not previous:
                self.crater.ledger.release(owner, ledger_key(name))
            if e.status == 409:
                raise PolicyError(f"name: a Ray cluster named {name} exists already", status=409) from None
            raise api_refusal(name, "created", e) from None
        # read-your-writes: the next GET (from the cache) must find what this call made
        return await self._seen(name, lambda got: got is not None, created)

    async def _seen(self, name, predicate, fallback, timeout=10.0):
        """The cached object once ``predicate`` holds for it (the watch delivered our write),
        else ``fallback`` after ``timeout`` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self.get(name)):
            if asyncio.get_running_loop().time() > deadline:
                log.warning("RayCluster %s: the cache did not show our write within %ss", name, timeout)
                return fallback
            await asyncio.sleep(0.05)
        return self.get(name)

    async def scale(self, owner, rc, workers, quota):
        """Set the replicas of the one worker group the hub makes, reserving the GPUs first
        (403 over quota; 409 for a cluster whose groups were changed by hand)."""
        try:
            patch = manifests.scale_patch(rc, workers)
        except ValueError as e:
            raise PolicyError(str(e), status=409) from None
        self._reserve(owner, rc, quota, workers)
        name = rc["metadata"]["name"]
        try:
            patched = await shared_client("CustomObjectsApi").patch_namespaced_custom_object(
                manifests.GROUP, manifests.VERSION, self.namespace, manifests.PLURAL, name, patch)
        except ApiException as e:
            self.crater.ledger.hold(owner, ledger_key(name), self.holding(rc))
            if e.status == 422:  # the worker group's test failed: changed since the cache saw it
                raise PolicyError(f"Ray cluster {name} changed meanwhile (its worker group is not "
                                  f"{manifests.WORKER_GROUP!r}); not scaled", status=409) from None
            raise api_refusal(name, "scaled", e) from None
        return await self._seen(name, lambda got: got is not None and manifests.workers_of(got) == workers,
                                patched)

    async def annotate(self, name, annotations):
        """Merge ``annotations`` into the RayCluster's (a JSON merge patch; 404 is fine)."""
        try:
            await shared_client("CustomObjectsApi").patch_namespaced_custom_object(
                manifests.GROUP, manifests.VERSION, self.namespace, manifests.PLURAL, name,
                {"metadata": {"annotations": annotations}},
                _content_type="application/merge-patch+json")
        except ApiException as e:
            if e.status != 404:
                raise

    async def delete(self, name):
        """Delete it; returns once the cache shows it gone or going (read-your-writes: a list
        right after the DELETE must not show it as it was)."""
        try:
            await shared_client("CustomObjectsApi").delete_namespaced_custom_object(
                manifests.GROUP, manifests.VERSION, self.namespace, manifests.PLURAL, name,
                propagation_policy="Background")
        except ApiException as e:
            if e.status != 404:
                raise
        await self._seen(name, lambda got: got is None or got["metadata"].get("deletionTimestamp"), None)

    async def token(self, rc):
        """The cluster's Ray token, from the Secret KubeRay makes (None until it exists)."""
        key = (rc["metadata"]["name"], rc["metadata"].get("uid"))
        if key not in self._tokens:
            try:
                secret = await shared_client("CoreV1Api").read_namespaced_secret(key[0], self.namespace)
            except ApiException as e:
                if e.status == 404:
                    return None
                raise
            value = (secret.data or {}).get("auth_token")
            if value is None:
                return None
            self._tokens[key] = base64.b64decode(value).decode()
        return self._tokens[key]


_services = {}  # (event loop, namespace) -> RayClusters


def service_for(crater, namespace):
    """The hub's one :class:`RayClusters` for ``namespace`` on this loop (made on first use, or
    at the hub's start by :mod:`.starter`, so that clusters count in the ledger from the start)."""
    loop = asyncio.get_running_loop()
    for key in [k for k in _services if k[0].is_closed()]:
        del _services[key]
    service = _services.get((loop, namespace))
    if service is None:
        service = _services[(loop, namespace)] = RayClusters(crater, namespace)
    return service
