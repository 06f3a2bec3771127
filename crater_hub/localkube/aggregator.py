"""API aggregation: ``apiregistration.k8s.io/v1`` APIServices, as kube-aggregator serves them.

An APIService with a ``spec.service`` makes localkube a reverse proxy for its group-version: every
request under ``/apis/<group>/<version>`` goes to a backend of that Service (an extension API
server such as Kueue's visibility server), and the response streams back unchanged. An APIService
without a service is "Local": served by localkube itself. Those are registered automatically for
every built-in group-version and every CRD's served versions, as the real apiserver does.

Backends are found the way ``--enable-aggregator-routing`` does it: the Service's endpoints, not
its cluster IP. For a Service with a selector they are computed from its ready pods by
:mod:`.endpoints`, exactly as the endpoints controller writes them (read directly so that a pod
becoming ready is seen at once); a selector-less Service uses its ``Endpoints`` object of the same
name; an ``ExternalName`` Service is its external name. localkube speaks plain HTTP to backends
(real: TLS verified with ``spec.caBundle``) — a listed deviation.

:class:`APIServiceController` keeps each APIService's ``Available`` condition, with the reasons
the real availability controller uses; :class:`Aggregator` does the proxying.
"""

import asyncio
import logging
import os
import random
from urllib.parse import parse_qsl, urlencode

import aiohttp
from tornado.iostream import StreamClosedError

from .controller import Controller
from .endpoints import selector_matches, service_subsets
from .resources import BUILTINS
from .store import isotime

log = logging.getLogger("localkube")

APISERVICES = ("apiregistration.k8s.io", "apiservices")
SERVICES = ("", "services")
ENDPOINTS = ("", "endpoints")
PODS = ("", "pods")
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")

AUTOMANAGED = "kube-aggregator.kubernetes.io/automanaged"
RECHECK_SECONDS = 30.0  # how often a remote APIService's backend is checked again
DISCOVERY_TIMEOUT = 5.0  # kube-aggregator's timeout for discovery, proxied or checked
CONNECT_TIMEOUT = 10.0

# The identity localkube passes to backends in the request-header (front proxy) scheme. localkube
# authenticates nobody, so every caller is this administrator.
PROXY_USER = "kubernetes-admin"
PROXY_GROUPS = ("system:masters", "system:authenticated")
CHECK_USER, CHECK_GROUPS = "system:kube-aggregator", ("system:masters",)

# groupPriorityMinimum/versionPriority of the built-in groups, as kube-apiserver registers them.
BUILTIN_PRIORITIES = {
    "": 18000, "apiregistration.k8s.io": 18000, "events.k8s.io": 17750, "batch": 17400,
    "discovery.k8s.io": 16200,
    "rbac.authorization.k8s.io": 17000, "storage.k8s.io": 16800, "apiextensions.k8s.io": 16700,
    "scheduling.k8s.io": 16600, "coordination.k8s.io": 16500,
}
CRD_GROUP_PRIORITY, CRD_VERSION_PRIORITY = 1000, 100

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
              "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"}


class Unavailable(Exception):
    """No backend can be resolved for a Service port."""


# -- resolution -----------------------------------------------------------------------------------


def apiservice_name(group, version):
    return f"{version}.{group}"


def remote_apiservice(store, registry, group, version):
    """The APIService that sends ``group``/``version`` to a Service, or None (served here)."""
    res = registry.lookup(APISERVICES[0], "v1", APISERVICES[1])
    obj = store.find(res, None, apiservice_name(group, version))
    if obj is None or not (obj.get("spec") or {}).get("service"):
        return None
    return obj


def remote_apiservices(store, registry):
    res = registry.lookup(APISERVICES[0], "v1", APISERVICES[1])
    return [o for o in store.iter_raw(res) if (o.get("spec") or {}).get("service")]


def service_ref(apiservice):
    """(namespace, name, port) of the APIService's service; the port defaults to 443."""
    svc = apiservice["spec"]["service"]
    return svc.get("namespace", ""), svc.get("name", ""), int(svc.get("port") or 443)


def resolve(store, registry, namespace, name, port):
    """(host, port) of one backend of Service ``namespace/name`` port ``port``, chosen at random.

    Raises :class:`Unavailable` with the message kube-apiserver's endpoint resolver gives.
    """
    svc = store.find(registry.lookup("", "v1", "services"), namespace, name)
    if svc is None:
        raise Unavailable(f'service "{name}" not found')
    spec = svc.get("spec") or {}
    if spec.get("type") == "ExternalName":
        if not spec.get("externalName"):
            raise Unavailable(f'service "{name}" has no externalName')
        return spec["externalName"], port
    svc_port = next((p for p in spec.get("ports") or [] if p.get("port") == port), None)
    if svc_port is None:
        raise Unavailable(f'no service port {port} found for service "{name}"')
    subsets = service_subsets(store, registry, svc)
    if subsets is None:
        raise Unavailable(f'endpoints "{name}" not found')
    candidates = [
        (addr["ip"], p["port"])
        for ss in subsets for p in ss.get("ports") or [] if p.get("name", "") == svc_port.get("name", "")
        for addr in ss.get("addresses") or [] if addr.get("ip")
    ]
    if not candidates:
        raise Unavailable(f'no endpoints available for service "{name}"')
    return random.choice(candidates)


def _host(host):
    return f"[{host}]" if ":" in host else host


def _dial_error(e):
    """A connection failure worded as Go's net package words it (what kube-aggregator reports)."""
    if isinstance(e, aiohttp.ClientConnectorError):
        errno = getattr(e.os_error, "errno", None)
        why = os.strerror(errno).lower() if errno else str(e.os_error)
        return f"dial tcp {_host(e.host)}:{e.port}: connect: {why}"
    return str(e) or type(e).__name__


# -- the availability controller --------------------------------------------------------------


class APIServiceController(Controller):
    """Keeps ``status.conditions[Available]`` of every APIService, and the Local ones registered.

    A remote APIService is checked as kube-aggregator's availability controller checks it: the
    Service exists, listens on the port, has endpoints with an address for that port, and its
    backend answers ``GET /apis/<group>/<version>`` with a 2xx within 5 seconds. Checked on every
    change of the APIService, its Service, endpoints or pods, after a proxied request could not
    connect, and every 30 seconds.
    """

    watches = (APISERVICES,)

    def __init__(self, cluster):
        super().__init__(cluster)
        self._session = None

    @property
    def apiservices(self):
        return self.res(APISERVICES[0], APISERVICES[1])

    def keys_for(self, change):
        if change.skey == CRDS:
            return [("autoregister",)]
        if change.skey == APISERVICES:
            if change.type == "DELETED" or (
                    change.type == "MODIFIED" and change.old is not None
                    and change.old.get("spec") == change.obj.get("spec")):
                return []  # our own status writes and deletions need no check
            return [(APISERVICES, None, change.obj["metadata"]["name"])]
        if change.skey not in (SERVICES, ENDPOINTS, PODS):
            return []
        meta = change.obj["metadata"]
        ns = meta.get("namespace")
        keys = []
        for apisvc in remote_apiservices(self.store, self.registry):
            svc_ns, svc_name, _ = service_ref(apisvc)
            if svc_ns != ns:
                continue
            if change.skey == PODS:
                svc = self.store.find(self.res("", "services"), svc_ns, svc_name)
                selector = ((svc or {}).get("spec") or {}).get("selector")
                if not selector:
                    continue
                olds = [change.obj] + ([change.old] if change.old is not None else [])
                if not any(selector_matches(selector, o["metadata"].get("labels")) for o in olds):
                    continue
            elif meta["name"] != svc_name:
                continue
            keys.append((APISERVICES, None, apisvc["metadata"]["name"]))
        return keys

    def start(self):
        self.autoregister()
        super().start()

    async def stop(self):
        await super().stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def recheck(self, name):
        """Check an APIService again now (a proxied request could not reach its backend)."""
        self.enqueue((APISERVICES, None, name))

    # -- Local APIServices -------------------------------------------------------------------

    def autoregister(self):
        """A Local APIService for every group-version served here; stale automanaged ones go."""
        builtin = {(r.group, r.version) for r in BUILTINS}
        wanted = {(r.group, r.version) for r in self.registry.all()}
        existing = {o["metadata"]["name"]: o for o in self.store.iter_raw(self.apiservices)}
        for group, version in sorted(wanted):
            name = apiservice_name(group, version)
            if name in existing:
                continue
            onstart = (group, version) in builtin
            self.store.create(self.apiservices, {
                "metadata": {"name": name, "labels": {AUTOMANAGED: "onstart" if onstart else "true"}},
                "spec": {"group": group, "version": version,
                         "groupPriorityMinimum": BUILTIN_PRIORITIES.get(group, 16000) if onstart
                         else CRD_GROUP_PRIORITY,
                         "versionPriority": 15 if onstart else CRD_VERSION_PRIORITY},
            })
        for name, obj in existing.items():
            spec = obj.get("spec") or {}
            if ((obj["metadata"].get("labels") or {}).get(AUTOMANAGED) and not spec.get("service")
                    and (spec.get("group", ""), spec.get("version")) not in wanted):
                self.store.delete(self.apiservices, None, name)

    # -- availability ------------------------------------------------------------------------

    async def reconcile(self, key):
        if key == ("autoregister",):
            self.autoregister()
            return None
        name = key[2]
        obj = self.store.find(self.apiservices, None, name)
        if obj is None:
            return None
        remote = bool((obj.get("spec") or {}).get("service"))
        available, reason, message = await self.check(obj) if remote else (
            True, "Local", "Local APIServices are always available")
        value = "True" if available else "False"

        def update(o):
            conditions = (o.setdefault("status", {}) or {}).get("conditions") or []
            old = next((c for c in conditions if c.get("type") == "Available"), None)
            if old and old.get("status") == value and old.get("reason") == reason \
                    and old.get("message") == message:
                return
            new = {"type": "Available", "status": value,
                   "lastTransitionTime": old["lastTransitionTime"]
                   if old and old.get("status") == value and old.get("lastTransitionTime") else isotime(),
                   "reason": reason, "message": message}
            o["status"] = {**(o.get("status") or {}),
                           "conditions": [c for c in conditions if c.get("type") != "Available"] + [new]}

        self.store.mutate(self.apiservices, None, name, update, subresource="status")
        return RECHECK_SECONDS if remote else None

    async def check(self, obj):
        """(available, reason, message) of a remote APIService, worded as kube-aggregator's."""
        spec = obj["spec"]
        ns, name, port = service_ref(obj)
        svc = self.store.find(self.res("", "services"), ns, name)
        if svc is None:
            return False, "ServiceNotFound", f'service/{name} in "{ns}" is not present'
        svc_spec = svc.get("spec") or {}
        if svc_spec.get("type", "ClusterIP") != "ExternalName":
            svc_port = next((p for p in svc_spec.get("ports") or [] if p.get("port") == port), None)
            if svc_port is None:
                return False, "ServicePortError", f'service/{name} in "{ns}" is not listening on port {port}'
            port_name = svc_port.get("name", "")
            subsets = service_subsets(self.store, self.registry, svc)
            if subsets is None:
                return False, "EndpointsNotFound", f'cannot find endpoints for service/{name} in "{ns}"'
            if not any(ss.get("addresses") and any(p.get("name", "") == port_name for p in ss.get("ports") or [])
                       for ss in subsets):
                return False, "MissingEndpoints", (f'endpoints for service/{name} in "{ns}" have no '
                                                   f'addresses with port name "{port_name}"')
        try:
            host, backend_port = resolve(self.store, self.registry, ns, name, port)
        except Unavailable as e:
            return False, "FailedDiscoveryCheck", str(e)
        url = f"http://{_host(host)}:{backend_port}/apis/{spec.get('group')}/{spec.get('version')}"
        headers = [("X-Remote-User", CHECK_USER)] + [("X-Remote-Group", g) for g in CHECK_GROUPS]
        try:
            async with self.session().get(
                    url, headers=headers, allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=DISCOVERY_TIMEOUT + 1)) as resp:
                await resp.read()
                if not 200 <= resp.status < 300:
                    return False, "FailedDiscoveryCheck", (f"failing or missing response from {url}: "
                                                           f"bad status from {url}: {resp.status}")
        except asyncio.TimeoutError:
            return False, "FailedDiscoveryCheck", f"timed out waiting for {url}"
        except (aiohttp.ClientError, OSError) as e:
            return False, "FailedDiscoveryCheck", f"failing or missing response from {url}: {_dial_error(e)}"
        return True, "Passed", "all checks passed"

    def session(self):
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"))
        return self._session


# -- the proxy ----------------------------------------------------------------------------------


def split_path(path):
    """(group, version) of an ``/apis/<group>/<version>[/...]`` path, else None."""
    parts = path.split("/")
    if len(parts) < 4 or parts[0] != "" or parts[1] != "apis" or not parts[2] or not parts[3]:
        return None
    return parts[2], parts[3]


def aggregated_groups(store, registry):
    """{group: {version: versionPriority}} of the group-versions proxied to a Service."""
    out = {}
    for obj in remote_apiservices(store, registry):
        spec = obj["spec"]
        if spec.get("group") and spec.get("version"):
            out.setdefault(spec["group"], {})[spec["version"]] = spec.get("versionPriority") or 0
    return out


class Aggregator:
    """Forwards requests for remote APIServices to their backends and streams the answers back."""

    def __init__(self, cluster):
        self.cluster = cluster
        self._session = None

    def target(self, path):
        """The remote APIService serving ``path``, or None."""
        gv = split_path(path)
        if gv is None:
            return None
        return remote_apiservice(self.cluster.store, self.cluster.registry, *gv)

    def session(self):
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"))
        return self._session

    async def close(self):
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _recheck(self, name):
        for c in getattr(self.cluster, "controllers", ()):
            if isinstance(c, APIServiceController):
                c.recheck(name)

    async def proxy(self, handler, apisvc):
        """Answer ``handler``'s request from a backend of ``apisvc``'s Service."""
        request = handler.request
        ns, name, port = service_ref(apisvc)
        try:
            host, backend_port = resolve(self.cluster.store, self.cluster.registry, ns, name, port)
        except Unavailable as e:
            log.info("aggregator: %s: %s", apisvc["metadata"]["name"], e)
            return unavailable(handler, "service unavailable")
        query = urlencode(sorted(parse_qsl(request.query, keep_blank_values=True), key=lambda kv: kv[0]))
        url = f"http://{_host(host)}:{backend_port}{request.path}" + (f"?{query}" if query else "")
        headers = [(k, v) for k, v in request.headers.get_all()
                   if k.lower() not in HOP_BY_HOP and k.lower() not in ("host", "content-length", "authorization")
                   and not k.lower().startswith("x-remote-")]
        headers += [("X-Remote-User", PROXY_USER)] + [("X-Remote-Group", g) for g in PROXY_GROUPS]
        forwarded = request.headers.get("X-Forwarded-For")
        headers = [(k, v) for k, v in headers if k.lower() != "x-forwarded-for"]
        headers.append(("X-Forwarded-For", f"{forwarded}, {request.remote_ip}" if forwarded else request.remote_ip))
        discovery = len(request.path.strip("/").split("/")) == 3
        timeout = aiohttp.ClientTimeout(total=DISCOVERY_TIMEOUT if discovery else None,
                                        sock_connect=CONNECT_TIMEOUT)
        started = False
        try:
            async with self.session().request(
                    request.method, url, headers=headers, data=request.body or None,
                    allow_redirects=False, timeout=timeout) as resp:
                handler.set_status(resp.status, resp.reason or "Unknown")
                handler.clear_header("Content-Type")
                seen = set()
                for k, v in resp.headers.items():
                    if k.lower() in HOP_BY_HOP:
                        continue
                    if k.lower() in seen:
                        handler.add_header(k, v)
                    else:
                        handler.set_header(k, v)
                        seen.add(k.lower())
                started = True
                async for chunk in resp.content.iter_any():
                    handler.write(chunk)
                    await handler.flush()
        except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError, asyncio.TimeoutError) as e:
            if started:
                log.info("aggregator: %s: backend stream ended: %r", apisvc["metadata"]["name"], e)
                return handler.finish()
            log.info("aggregator: %s: %s unreachable: %s", apisvc["metadata"]["name"], url, _dial_error(e))
            if not isinstance(e, asyncio.TimeoutError):
                self._recheck(apisvc["metadata"]["name"])
            return unavailable(handler, "service unavailable")
        except StreamClosedError:
            return None
        except aiohttp.ClientError as e:
            if started:
                return handler.finish()
            return unavailable(handler, f"error trying to reach service: {_dial_error(e)}")
        handler.finish()


def unavailable(handler, message):
    """kube-aggregator's proxy error: plain text, not a Status object (``http.Error`` in Go)."""
    handler.clear()
    handler.set_status(503)
    handler.set_header("Content-Type", "text/plain; charset=utf-8")
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.finish(message + "\n")
