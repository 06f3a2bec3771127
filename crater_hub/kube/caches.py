"""Shared LIST+WATCH caches: the hub reads cluster state from here, never with a LIST per request.

A :class:`WatchCache` holds every object of one kind (optionally one namespace, optionally
filtered by label/field selectors) as the raw JSON dicts the API server sent, keyed
``namespace/name`` (or ``name`` for cluster-scoped kinds such as Nodes). It works like
KubeSpawner's reflector, with the differences a hub-wide, 100k-object cache needs:

- **Raw JSON.** Lists and watch streams are read with ``_preload_content=False`` and decoded with
  :func:`json.loads`; kubernetes_asyncio's model deserialization is orders of magnitude slower.
- **Resumed, not relisted.** When a watch ends (the server closes it at ``timeout_seconds``) the
  next one starts from the last resourceVersion seen; ``allowWatchBookmarks`` keeps that version
  fresh on quiet kinds. Only a ``410 Gone`` (the version fell out of the server's history) or an
  error leads to a new LIST, after a capped exponential back-off on errors.
- **Relists are diffed.** A relist replaces the contents in one step and tells listeners what
  changed: new objects as ADDED, changed ones as MODIFIED, and objects that vanished while the
  cache was disconnected as DELETED — so indexes derived from the cache never keep ghosts.
- **Listeners.** ``add_listener(callback)`` registers a synchronous
  ``callback(event_type, obj, old)`` called after each change is stored, which is how derived
  indexes (:class:`crater_hub.kube.inventory.Inventory`) stay up to date incrementally.

Everything runs on the event loop that started the cache; nothing here blocks it with I/O.
:meth:`WatchCache.shared` gives one started cache per (event loop, kind, namespace, selectors).
"""

import asyncio
import json
import logging
import time

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from .client import shared_client

log = logging.getLogger("crater_hub.kube")

#: kind -> (API class, list method for one namespace, list method across namespaces or cluster).
#: Cluster-scoped kinds have no namespaced method.
KINDS = {
    "pods": ("CoreV1Api", "list_namespaced_pod", "list_pod_for_all_namespaces"),
    "nodes": ("CoreV1Api", None, "list_node"),
    "events": ("CoreV1Api", "list_namespaced_event", "list_event_for_all_namespaces"),
    "services": ("CoreV1Api", "list_namespaced_service", "list_service_for_all_namespaces"),
    "persistentvolumeclaims": (
        "CoreV1Api",
        "list_namespaced_persistent_volume_claim",
        "list_persistent_volume_claim_for_all_namespaces",
    ),
    "namespaces": ("CoreV1Api", None, "list_namespace"),
    "jobs": ("BatchV1Api", "list_namespaced_job", "list_job_for_all_namespaces"),
}

EVENT_TYPES = ("ADDED", "MODIFIED", "DELETED")


class Gone(Exception):
    """The watch's resourceVersion is older than the server's history (HTTP 410): relist."""


def object_key(obj):
    """``namespace/name`` for namespaced objects, ``name`` for cluster-scoped ones."""
    meta = obj["metadata"]
    ns = meta.get("namespace")
    return f"{ns}/{meta['name']}" if ns else meta["name"]


class WatchCache:
    """Every object of one kind, kept current by LIST then WATCH from the last resourceVersion.

    ``kind``: a key of :data:`KINDS` (``"pods"``, ``"nodes"``, ``"jobs"``, ...) or a custom
    resource as ``"group/version/plural"`` (``"ray.io/v1/rayclusters"``), read through
    CustomObjectsApi. ``namespace``: one namespace, or None for all namespaces (and for
    cluster-scoped kinds). ``label_selector``/``field_selector``: as the API takes them.
    ``timeout_seconds``: how long each watch runs before the server ends it (and it is resumed).
    ``api``: the API object to use (tests); by default :func:`shared_client` of this loop.

    Read with :attr:`objects` (``key -> dict``; treat the dicts as read-only), :meth:`get`,
    ``len(cache)`` and ``iter(cache)`` (over the objects). Wait with ``await cache.first_load``
    (or :meth:`ready`) before answering questions from it.
    """

    def __init__(self, kind, namespace=None, label_selector=None, field_selector=None, *,
                 timeout_seconds=300, api=None, initial_delay=0.1, max_delay=30.0):
        self.kind = kind
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.timeout_seconds = timeout_seconds
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self._api = api
        self.objects = {}
        #: the version to resume watching from; None until the first LIST
        self.resource_version = None
        #: False while the cache is between a failure and the next successful LIST or watch
        self.connected = False
        #: counters, for logs, health and tests
        self.stats = {"lists": 0, "watches": 0, "gone": 0, "errors": 0, "events": 0}
        self._listeners = []
        self._first_load = None
        self._task = None
        self._stopping = False

    def __repr__(self):
        where = f" in {self.namespace}" if self.namespace else ""
        return f"<WatchCache {self.kind}{where} ({len(self.objects)} objects)>"

    # -- reading -----------------------------------------------------------------------------

    def __len__(self):
        return len(self.objects)

    def __iter__(self):
        return iter(list(self.objects.values()))

    def get(self, name, namespace=None):
        """The object named ``name`` (in ``namespace`` for namespaced kinds), or None."""
        return self.objects.get(f"{namespace}/{name}" if namespace else name)

    @property
    def first_load(self):
        """A future done once the first LIST has been stored (await it; it is never cancelled)."""
        return asyncio.shield(self._first_load_future())

    def _first_load_future(self):
        if self._first_load is None:
            self._first_load = asyncio.get_running_loop().create_future()
        return self._first_load

    async def ready(self, timeout=None):
        """Start the cache if needed and wait for its first LIST."""
        self.start()
        await asyncio.wait_for(self.first_load, timeout)
        return self

    # -- listeners ---------------------------------------------------------------------------

    def add_listener(self, callback):
        """Call ``callback(event_type, obj, old)`` after every change, synchronously.

        ``event_type`` is ADDED, MODIFIED or DELETED; ``obj`` the new object (for DELETED, the
        last known state); ``old`` the object it replaced (None for ADDED). Callbacks must be
        quick and must not modify the objects; an exception in one is logged and ignored.
        """
        self._listeners.append(callback)

    def remove_listener(self, callback):
        self._listeners.remove(callback)

    def _notify(self, event_type, obj, old):
        for callback in self._listeners:
            try:
                callback(event_type, obj, old)
            except Exception:
                log.exception("listener %r of %r failed on %s", callback, self, event_type)

    # -- the event path (used by the watch, the relist, and benchmarks) ----------------------

    def apply(self, event_type, obj):
        """Store one watch event (ADDED, MODIFIED, DELETED) and tell the listeners."""
        key = object_key(obj)
        self.stats["events"] += 1
        rv = obj["metadata"].get("resourceVersion")
        if rv:
            self.resource_version = rv
        if event_type == "DELETED":
            old = self.objects.pop(key, None)
            if old is not None:
                self._notify("DELETED", obj, old)
            return
        old = self.objects.get(key)
        self.objects[key] = obj
        self._notify("MODIFIED" if old is not None else "ADDED", obj, old)

    def replace(self, items, resource_version):
        """Replace the contents with a fresh LIST and report the difference to listeners.

        Objects whose resourceVersion did not change produce no event; objects that are no longer
        listed (deleted while the watch was down) are reported as DELETED.
        """
        old_objects = self.objects
        fresh = {object_key(obj): obj for obj in items}
        self.objects = fresh
        self.resource_version = resource_version
        for key, old in old_objects.items():
            if key not in fresh:
                self._notify("DELETED", old, old)
        for key, obj in fresh.items():
            old = old_objects.get(key)
            if old is None:
                self._notify("ADDED", obj, None)
            elif old["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self._notify("MODIFIED", obj, old)

    # -- running -----------------------------------------------------------------------------

    def start(self):
        """Start listing and watching in a task on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._stopping = False
            self._first_load_future()  # made on this loop, before anyone awaits it
            self._task = asyncio.create_task(self._run(), name=f"watch-{self.kind}")
        return self

    async def stop(self):
        """Stop watching. The contents and :attr:`resource_version` are kept: ``start()`` resumes."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.connected = False

    def _client(self):
        if self._api is None:
            group = "CustomObjectsApi" if self.kind not in KINDS else KINDS[self.kind][0]
            self._api = shared_client(group)
        return self._api

    async def _request(self, **kwargs):
        """One LIST or WATCH call, returning the raw aiohttp response."""
        api = self._client()
        if self.label_selector:
            kwargs["label_selector"] = self.label_selector
        if self.field_selector:
            kwargs["field_selector"] = self.field_selector
        kwargs["_preload_content"] = False
        if self.kind in KINDS:
            _, namespaced, everywhere = KINDS[self.kind]
            if self.namespace and namespaced:
                return await getattr(api, namespaced)(self.namespace, **kwargs)
            return await getattr(api, everywhere)(**kwargs)
        group, version, plural = self.kind.rsplit("/", 2)
        if self.namespace:
            return await api.list_namespaced_custom_object(group, version, self.namespace, plural,
                                                           **kwargs)
        return await api.list_cluster_custom_object(group, version, plural, **kwargs)

    async def _open(self, **kwargs):
        """:meth:`_request`, with non-2xx answers raised (410 as :class:`Gone`)."""
        response = await self._request(**kwargs)
        if 200 <= response.status <= 299:
            return response
        try:
            body = await response.read()
        finally:
            response.release()
        try:
            message = json.loads(body).get("message") or response.reason
        except ValueError:
            message = body[:200].decode(errors="replace") or response.reason
        if response.status == 410:
            raise Gone(message)
        raise ApiException(status=response.status, reason=message)

    async def _list(self):
        """LIST everything, store it with :meth:`replace`; returns the list's resourceVersion."""
        response = await self._open(
            _request_timeout=aiohttp.ClientTimeout(total=None, sock_read=120, sock_connect=30)
        )
        try:
            body = await response.read()
        finally:
            response.release()
        listing = json.loads(body)
        self.stats["lists"] += 1
        rv = listing["metadata"]["resourceVersion"]
        self.replace(listing.get("items") or [], rv)
        self.connected = True
        if not self._first_load_future().done():
            self._first_load.set_result(None)
        return rv

    async def _watch(self):
        """WATCH from :attr:`resource_version` until the server ends the stream.

        Raises :class:`Gone` on an in-stream 410 (or an HTTP 410), ApiException on other errors.
        """
        response = await self._open(
            watch=True,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.timeout_seconds,
            # a read deadline beyond the server's, so a silently dead connection is noticed
            _request_timeout=aiohttp.ClientTimeout(
                total=None, sock_read=self.timeout_seconds + 30, sock_connect=30
            ),
        )
        self.stats["watches"] += 1
        buffer = b""
        try:
            async for chunk in response.content.iter_any():
                buffer += chunk
                if b"\n" not in buffer:
                    continue
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._handle_line(line)
                self.connected = True
            if buffer.strip():
                self._handle_line(buffer)
        finally:
            response.release()

    def _handle_line(self, line):
        event = json.loads(line)
        event_type = event.get("type")
        obj = event.get("object") or {}
        if event_type in EVENT_TYPES:
            self.apply(event_type, obj)
        elif event_type == "BOOKMARK":
            rv = obj.get("metadata", {}).get("resourceVersion")
            if rv:
                self.resource_version = rv
        elif event_type == "ERROR":
            if obj.get("code") == 410:
                raise Gone(obj.get("message", "resource version too old"))
            raise ApiException(status=obj.get("code") or 500, reason=obj.get("message"))

    async def _run(self):
        delay = self.initial_delay
        need_list = self.resource_version is None
        while not self._stopping:
            just_listed = False
            try:
                if need_list:
                    await self._list()
                    need_list = False
                    just_listed = True
                started = time.monotonic()
                await self._watch()
                if time.monotonic() - started < min(1.0, self.timeout_seconds / 2):
                    # a server that ends watches at once: don't spin against it
                    await self._backoff(delay)
                    delay = min(delay * 2, self.max_delay)
                else:
                    delay = self.initial_delay
            except asyncio.CancelledError:
                raise
            except Gone as e:
                # Expected after a long disconnection, or on a quiet kind of a busy cluster:
                # relist at once; back off only if even a fresh list's version is gone.
                self.stats["gone"] += 1
                log.info("%r: resourceVersion %s expired (%s); relisting",
                         self, self.resource_version, e)
                need_list = True
                if just_listed:
                    await self._backoff(delay)
                    delay = min(delay * 2, self.max_delay)
            except Exception as e:
                self.stats["errors"] += 1
                self.connected = False
                need_list = True
                log.warning("%r: watch failed (%s: %s); relisting in %.1fs",
                            self, type(e).__name__, e, delay)
                await self._backoff(delay)
                delay = min(delay * 2, self.max_delay)

    async def _backoff(self, delay):
        await asyncio.sleep(delay)

    # -- sharing -----------------------------------------------------------------------------

    _shared = {}

    @classmethod
    def shared(cls, kind, namespace=None, label_selector=None, field_selector=None, **kwargs):
        """The started cache of this kind on the running loop, made on first use.

        One cache per (event loop, kind, namespace, label_selector, field_selector); ``kwargs``
        (``timeout_seconds``, ...) only apply when the cache is made.
        """
        loop = asyncio.get_running_loop()
        for key in [k for k in cls._shared if k[0].is_closed()]:
            del cls._shared[key]
        key = (loop, kind, namespace, label_selector, field_selector)
        cache = cls._shared.get(key)
        if cache is None:
            cache = cls._shared[key] = cls(kind, namespace, label_selector, field_selector, **kwargs)
        return cache.start()


class FollowsNodesAndPods:
    """For an index kept from the shared node and pod caches (the inventory, the device index):
    it has ``node_cache``, ``pod_cache``, ``on_node_event`` and ``on_pod_event``. Listening
    first, then replaying what the caches already hold as ``ADDED``, misses no event between the
    two (listeners run on the loop, as this does)."""

    def follow_caches(self):
        self.node_cache.add_listener(self.on_node_event)
        self.pod_cache.add_listener(self.on_pod_event)
        for node in list(self.node_cache.objects.values()):
            self.on_node_event("ADDED", node, None)
        for pod in list(self.pod_cache.objects.values()):
            self.on_pod_event("ADDED", pod, None)

    async def ready(self, timeout=None):
        """Start the caches if needed and wait until both have loaded once."""
        await asyncio.gather(self.node_cache.ready(timeout), self.pod_cache.ready(timeout))
        return self

    def close(self):
        """Stop listening to the caches (they keep running: they are shared)."""
        self.node_cache.remove_listener(self.on_node_event)
        self.pod_cache.remove_listener(self.on_pod_event)


async def stop_shared_caches():
    """Stop every shared cache of the running loop (when the hub shuts down)."""
    loop = asyncio.get_running_loop()
    for key in [k for k in WatchCache._shared if k[0] is loop]:
        await WatchCache._shared.pop(key).stop()
