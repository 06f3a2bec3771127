"""The HTTP face of localkube: discovery, CRUD, watch, patch, logs — the real REST/JSON protocol.

Handlers here only translate HTTP to store calls and back; every rule about objects lives in the
store, the controllers and :mod:`.defaults`. Errors leave as ``Status`` objects with the codes a
kube-apiserver sends, and watches stream NDJSON events until ``timeoutSeconds``.
"""

import asyncio
import json
import logging
import re

import yaml
from tornado import web
from tornado.iostream import StreamClosedError
from tornado.routing import Matcher

from . import tables
from .aggregator import aggregated_groups
from .errors import ApiError, bad_request, method_not_allowed
from .patch import CONTENT_TYPES, apply_patch
from .selectors import Selector

log = logging.getLogger("localkube")

KUBE_VERSION = {
    "major": "1", "minor": "31", "gitVersion": "v1.31.0-localkube", "gitCommit": "localkube",
    "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22.0",
    "compiler": "gc", "platform": "linux/amd64",
}
BOOKMARK_INTERVAL = 5.0  # seconds between BOOKMARK events on idle watches that asked for them
MAX_WATCH_SECONDS = 1800


def _version_key(version):
    """Kubernetes version priority: GA > beta > alpha, then by number (v1 > v1beta2 > v1alpha1)."""
    m = re.match(r"^v(\d+)(?:(alpha|beta)(\d+))?$", version)
    if not m:
        return (-1, 0, 0)
    stage = {"alpha": 0, "beta": 1, None: 2}[m.group(2)]
    return (stage, int(m.group(1)), int(m.group(3) or 0))


def _truthy(value):
    return str(value).lower() in ("true", "1", "yes")


class BaseHandler(web.RequestHandler):
    """JSON in and out; ApiError becomes a Status body."""

    def initialize(self, cluster):
        self.cluster = cluster
        self.store = cluster.store
        self.registry = cluster.registry

    def check_xsrf_cookie(self):
        pass

    def send_json(self, body, status=200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def write_error(self, status_code, exc_info=None, **kwargs):
        err = exc_info[1] if exc_info else None
        if isinstance(err, ApiError):
            body = err.status()
        elif isinstance(err, web.HTTPError):
            body = ApiError(status_code, "NotFound" if status_code == 404 else "BadRequest",
                            err.log_message or self._reason).status()
        else:
            body = ApiError(500, "InternalError", f"Internal error occurred: {err!r}").status()
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def log_exception(self, typ, value, tb):
        if isinstance(value, ApiError):
            return
        super().log_exception(typ, value, tb)

    def _handle_request_exception(self, e):
        if isinstance(e, ApiError):
            self.set_status(e.code)
            if not self._finished:
                self.send_error(e.code, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)

    def body_json(self):
        raw = self.request.body
        if not raw:
            return {}
        ctype = self.request.headers.get("Content-Type", "")
        try:
            if "yaml" in ctype and "json" not in ctype:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as e:
            raise bad_request(f"the body of the request was in an unknown format: {e}") from None


class VersionHandler(BaseHandler):
    def get(self):
        self.send_json(KUBE_VERSION)


class HealthHandler(BaseHandler):
    def get(self, _):
        self.set_header("Content-Type", "text/plain")
        self.finish("ok")


class CoreVersionsHandler(BaseHandler):
    def get(self):
        self.send_json({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.request.host}],
        })


class GroupListHandler(BaseHandler):
    def _group(self, name, versions, priorities):
        # an aggregated version's versionPriority first (kube-aggregator's order), then the name
        ordered = sorted(versions, key=lambda v: (priorities.get(v, 0), _version_key(v)), reverse=True)
        gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in ordered]
        return {"name": name, "versions": gvs, "preferredVersion": gvs[0]}

    def get(self, group=None):
        groups = self.registry.groups()
        remote = aggregated_groups(self.store, self.registry)
        for name, versions in remote.items():
            listed = groups.setdefault(name, [])
            listed.extend(v for v in versions if v not in listed)
        if group is None:
            self.send_json({"kind": "APIGroupList", "apiVersion": "v1",
                            "groups": [self._group(g, vs, remote.get(g, {}))
                                       for g, vs in sorted(groups.items())]})
        elif group in groups:
            self.send_json({"kind": "APIGroup", "apiVersion": "v1",
                            **self._group(group, groups[group], remote.get(group, {}))})
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")


class ResourceListHandler(BaseHandler):
    def get(self, group="", version="v1"):
        resources = self.registry.in_group_version(group, version)
        if not resources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        entries = [e for r in sorted(resources, key=lambda r: r.plural) for e in r.discovery_entries()]
        self.send_json({"kind": "APIResourceList", "apiVersion": "v1",
                        "groupVersion": f"{group}/{version}" if group else version, "resources": entries})


class ObjectHandler(BaseHandler):
    """Every resource path: collections, objects and their subresources, in any namespace."""

    def parse(self, group, version, rest):
        segs = [s for s in rest.split("/") if s]
        namespace = None
        if len(segs) >= 3 and segs[0] == "namespaces":
            candidate = self.registry.lookup(group, version, segs[2])
            if candidate is not None and candidate.namespaced:
                namespace, segs = segs[1], segs[2:]
        res = self.registry.lookup(group, version, segs[0]) if segs else None
        if res is None or len(segs) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = segs[1] if len(segs) > 1 else None
        sub = segs[2] if len(segs) > 2 else None
        # exec and portforward are websockets, served by .streams on their namespaced paths only
        if sub and (sub not in res.subresources or sub in ("exec", "portforward")):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return res, namespace, name, sub

    def view(self, res, obj):
        return {**obj, "apiVersion": res.api_version, "kind": res.kind}

    def selector(self):
        return Selector(self.get_argument("labelSelector", ""), self.get_argument("fieldSelector", ""))

    def reject_dry_run(self):
        if self.get_argument("dryRun", None):
            raise bad_request("dryRun is not supported by localkube")

    # -- GET ---------------------------------------------------------------------------------

    async def get(self, *route):
        res, ns, name, sub = self.parse(*self._route(route))
        if name is None:
            if _truthy(self.get_argument("watch", "false")):
                return await self.watch(res, ns)
            return self.list(res, ns)
        if sub == "log":
            from .logs import stream_log

            return await stream_log(self, res, ns, name)
        obj = self.store.get(res, ns, name)
        if tables.wants_table(self.request.headers.get("Accept")) and sub is None:
            return self.send_json(tables.table(res, [obj], obj["metadata"]["resourceVersion"],
                                               self.get_argument("includeObject", "Metadata")))
        self.send_json(obj)

    def list(self, res, ns):
        items, rv = self.store.list(res, ns, self.selector())
        if tables.wants_table(self.request.headers.get("Accept")):
            return self.send_json(tables.table(res, items, rv, self.get_argument("includeObject", "Metadata")))
        self.send_json({"kind": res.list_kind or f"{res.kind}List", "apiVersion": res.api_version,
                        "metadata": {"resourceVersion": rv}, "items": items})

    async def watch(self, res, ns):
        selector = self.selector()
        since = self.get_argument("resourceVersion", None)
        timeout = min(float(self.get_argument("timeoutSeconds", MAX_WATCH_SECONDS)), MAX_WATCH_SECONDS)
        bookmarks = _truthy(self.get_argument("allowWatchBookmarks", "false"))
        send_initial = _truthy(self.get_argument("sendInitialEvents", "false"))
        as_table = tables.wants_table(self.request.headers.get("Accept"))
        self.set_header("Content-Type", "application/json")
        initial = []
        try:
            if send_initial or since in (None, "", "0"):
                initial, rv = self.store.list(res, ns, selector)
                watcher = self.store.watch(res, ns, selector, since=rv)
            else:
                watcher = self.store.watch(res, ns, selector, since=since)
        except ApiError as e:
            if e.code != 410:
                raise
            self.write(json.dumps({"type": "ERROR", "object": e.status()}) + "\n")
            return self.finish()

        def emit(etype, obj):
            if as_table and etype in ("ADDED", "MODIFIED", "DELETED"):
                obj = tables.table(res, [self.view(res, obj)], obj["metadata"]["resourceVersion"],
                                   self.get_argument("includeObject", "Metadata"))
            elif etype != "BOOKMARK":
                obj = self.view(res, obj)
            self.write(json.dumps({"type": etype, "object": obj}) + "\n")

        def bookmark(extra=None):
            meta = {"resourceVersion": str(self.store.rv)}
            if extra:
                meta["annotations"] = extra
            emit("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta})

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            for item in initial:
                emit("ADDED", item)
            if send_initial and bookmarks:
                bookmark({"k8s.io/initial-events-end": "true"})
            await self.flush()
            idle_since = loop.time()
            while not self.request.connection.stream.closed():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    etype, obj = await asyncio.wait_for(watcher.queue.get(), min(remaining, 1.0))
                except asyncio.TimeoutError:
                    if bookmarks and loop.time() - idle_since >= BOOKMARK_INTERVAL:
                        bookmark()
                        await self.flush()
                        idle_since = loop.time()
                    continue
                emit(etype, obj)
                while not watcher.queue.empty():
                    emit(*watcher.queue.get_nowait())
                await self.flush()
                idle_since = loop.time()
        except StreamClosedError:
            return
        finally:
            watcher.close()
        if not self.request.connection.stream.closed():
            self.finish()

    # -- writes ------------------------------------------------------------------------------

    def post(self, *route):
        res, ns, name, sub = self.parse(*self._route(route))
        self.reject_dry_run()
        body = self.body_json()
        if sub == "binding":
            return self.bind(res, ns, name, body)
        if name is not None:
            raise method_not_allowed(f"POST is not supported on {res.plural}/{name}")
        if not isinstance(body, dict):
            raise bad_request("the body must be a JSON object")
        sent = body.get("apiVersion")
        if sent and sent != res.api_version:
            raise bad_request(f"the API version in the data ({sent}) does not match the expected API "
                              f"version ({res.api_version})")
        if body.get("kind") and body["kind"] != res.kind:
            raise bad_request(f"the kind in the data ({body['kind']}) does not match the expected kind ({res.kind})")
        self.send_json(self.store.create(res, body, ns), 201)

    def bind(self, res, ns, name, body):
        target = (body.get("target") or {}).get("name")
        if not target:
            raise bad_request("binding target name is required")

        def assign(pod):
            if pod["spec"].get("nodeName"):
                raise ApiError(409, "Conflict", f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"')
            pod["spec"]["nodeName"] = target

        self.store.get(res, ns, name)
        self.store.mutate(res, ns, name, assign)
        self.send_json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201)

    def put(self, *route):
        res, ns, name, sub = self.parse(*self._route(route))
        self.reject_dry_run()
        if name is None:
            raise method_not_allowed("PUT needs an object name")
        body = self.body_json()
        if not isinstance(body, dict):
            raise bad_request("the body must be a JSON object")
        self.send_json(self.store.replace(res, body, ns, name, subresource=sub))

    def patch(self, *route):
        res, ns, name, sub = self.parse(*self._route(route))
        self.reject_dry_run()
        if name is None:
            raise method_not_allowed("PATCH needs an object name")
        ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip()
        kind = CONTENT_TYPES.get(ctype)
        if kind is None or kind == "apply":
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                           f"accepted media types include: {', '.join(t for t, k in CONTENT_TYPES.items() if k != 'apply')}")
        current = self.store.get(res, ns, name)
        patched = apply_patch(kind, current, self.body_json(), builtin=not self._is_custom(res))
        if not isinstance(patched, dict):
            raise bad_request("the patch does not produce an object")
        self.send_json(self.store.replace(res, patched, ns, name, subresource=sub))

    def _is_custom(self, res):
        return res.group not in ("", "batch", "apiextensions.k8s.io", "apiregistration.k8s.io",
                                 "rbac.authorization.k8s.io",
                                 "coordination.k8s.io", "events.k8s.io", "scheduling.k8s.io", "storage.k8s.io")

    def delete(self, *route):
        res, ns, name, sub = self.parse(*self._route(route))
        self.reject_dry_run()
        opts = self.body_json() or {}
        grace = self.get_argument("gracePeriodSeconds", None)
        grace = opts.get("gracePeriodSeconds") if grace is None else grace
        policy = self.get_argument("propagationPolicy", None) or opts.get("propagationPolicy")
        if policy is None and opts.get("orphanDependents") is not None:
            policy = "Orphan" if opts["orphanDependents"] else "Background"
        try:
            grace = None if grace is None else int(grace)
        except (TypeError, ValueError):
            raise bad_request(f"invalid gracePeriodSeconds {grace!r}") from None
        if name is None:
            items, _ = self.store.list(res, ns, self.selector())
            for item in items:
                self.store.delete(res, item["metadata"].get("namespace"), item["metadata"]["name"], grace, policy)
            return self.send_json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
        self.send_json(self.store.delete(res, ns, name, grace, policy, opts.get("preconditions")))

    def _route(self, route):
        if len(route) == 1:  # core group: /api/v1/<rest>
            return "", "v1", route[0]
        return route


class OpenAPIHandler(BaseHandler):
    def get(self, path):
        from . import openapi

        path = (path or "").strip("/")
        if not path:
            return self.send_json(openapi.index(self.registry))
        parts = path.split("/")
        if parts[0] == "api" and len(parts) == 2:
            group, version = "", parts[1]
        elif parts[0] == "apis" and len(parts) == 3:
            group, version = parts[1], parts[2]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not self.registry.in_group_version(group, version):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        self.send_json(openapi.document(self.registry, group, version))


class AggregatedMatcher(Matcher):
    """Matches ``/apis/<group>/<version>[/...]`` of a group-version an APIService proxies."""

    def __init__(self, cluster):
        self.cluster = cluster

    def match(self, request):
        return {} if self.cluster.aggregator.target(request.path) is not None else None


class AggregatedProxyHandler(BaseHandler):
    """Every method, streamed to and from the backend of the APIService (see :mod:`.aggregator`)."""

    _proxying = None

    def compute_etag(self):
        return None

    async def _proxy(self, *_):
        apisvc = self.cluster.aggregator.target(self.request.path)
        if apisvc is None:  # deleted since routing
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        self._proxying = asyncio.ensure_future(self.cluster.aggregator.proxy(self, apisvc))
        try:
            await self._proxying
        except asyncio.CancelledError:
            if not self.request.connection.stream.closed():
                raise

    def on_connection_close(self):
        if self._proxying is not None:
            self._proxying.cancel()

    get = head = post = put = patch = delete = options = _proxy


class DcgmMetricsHandler(BaseHandler):
    """A node's DCGM exporter (:mod:`.dcgm`), at the node proxy path of its port 9400."""

    async def get(self, node):
        text = await self.cluster.dcgm.metrics(node)
        if text is None:
            raise ApiError(404, "NotFound", f'nodes "{node}" not found')
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(text)


class NotFoundHandler(BaseHandler):
    def prepare(self):
        raise ApiError(404, "NotFound", "the server could not find the requested resource")


def make_app(cluster):
    from . import streams

    args = {"cluster": cluster}
    return web.Application([
        (r"/version/?", VersionHandler, args),
        (r"/(readyz|healthz|livez)", HealthHandler, args),
        (r"/api/?", CoreVersionsHandler, args),
        (r"/api/v1/?", ResourceListHandler, args),
        (streams.ROUTE, streams.PodStreamHandler, args),
        (r"/api/v1/nodes/([^/:]+):9400/proxy/metrics", DcgmMetricsHandler, args),
        (r"/api/v1/(.+)", ObjectHandler, args),
        (r"/apis/?", GroupListHandler, args),
        (r"/apis/([^/]+)/?", GroupListHandler, args),
        (AggregatedMatcher(cluster), AggregatedProxyHandler, args),
        (r"/apis/([^/]+)/([^/]+)/?", ResourceListHandler, args),
        (r"/apis/([^/]+)/([^/]+)/(.+)", ObjectHandler, args),
        (r"/openapi/v3(/.*)?", OpenAPIHandler, args),
        (r".*", NotFoundHandler, args),
    ], log_function=_log_request)


def _log_request(handler):
    status = handler.get_status()
    if status >= 500:
        log.error("%d %s %s", status, handler.request.method, handler.request.uri)
    else:
        log.debug("%d %s %s", status, handler.request.method, handler.request.uri)
