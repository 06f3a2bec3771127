"""REST of Ray clusters (``/hub/api/crater/ray/clusters``) and the proxy of their dashboards
(``/hub/crater/ray/{cluster}/dashboard/...``).

Thin: parse, authorize (``custom:crater:use`` for one's own clusters, ``custom:crater:admin``
for everyone's; another user's cluster is a 404), one call to :mod:`crater_hub.ray`, JSON out.
The workload fields of a create body go through the one workload policy
(:func:`crater_hub.policy.workload.resolve`) exactly as a spawn's options do.

The dashboard proxy is how a notebook reaches its cluster's Jobs API: z2jh's single-user
NetworkPolicy keeps notebooks from pods' private IPs, and users hold no Kubernetes credentials.
The hub authenticates the caller (owner or admin), drops their hub credentials and adds the
cluster's Ray token (``Authorization: Bearer``) itself, so the token never has to leave the hub.
"""

import asyncio
import logging

from jupyterhub.user import User
from jupyterhub.utils import url_escape_path, url_path_join
from tornado import httputil, web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.websocket import WebSocketClosedError, WebSocketHandler, websocket_connect

from ..datasets.choices import choices_for
from ..hubstart import hub_app, spawner_namespace
from ..policy import workload
from ..ray import idle, manifests, options
from ..ray.clusters import service_for
from .base import ADMIN, USE, CraterAPIHandler

#: request headers never passed to the head (hop-by-hop, and the caller's hub credentials)
DROPPED_REQUEST = {"host", "authorization", "cookie", "content-length", "transfer-encoding",
                   "connection", "x-xsrftoken", "accept-encoding"}
#: the caller's websocket handshake: the hub makes its own to the head
WEBSOCKET_REQUEST = {"upgrade", "sec-websocket-key", "sec-websocket-version",
                     "sec-websocket-extensions", "sec-websocket-accept", "sec-websocket-protocol"}
PASSED_RESPONSE = {"content-type", "content-disposition", "cache-control", "location"}
CONNECT_TIMEOUT = 10
#: the longest one proxied HTTP answer may take, streamed (websockets have no limit)
PROXY_TIMEOUT = 3600

log = logging.getLogger("crater_hub.ray")


class RayBase(CraterAPIHandler):
    def user(self):
        user = self.current_user
        if not isinstance(user, User):
            raise web.HTTPError(403, "only users have Ray clusters; this token belongs to a service")
        return user

    def viewer(self):
        """The calling user, or None for an administrating service (which may only read)."""
        user = self.current_user
        if isinstance(user, User):
            return user
        if self.has_scope(ADMIN) and self.request.method == "GET":
            return None
        return self.user()

    async def service(self, user):
        if user is not None:
            namespace = user.spawner.namespace
        else:  # an administrating service: the servers' namespace, as the hub's config says
            app = hub_app()
            namespace = (spawner_namespace(app) if app is not None else None) or "default"
        service = service_for(self.crater, namespace)
        try:
            return await service.ready()
        except TimeoutError:
            raise web.HTTPError(503, "Ray clusters are not available now: the cluster does not "
                                "answer for RayClusters (is KubeRay installed?)") from None

    def fail(self, error):
        raise web.HTTPError(error.status, error.message)

    def find(self, service, user, name):
        """The cluster if the caller may see it, else 404 (others' clusters do not exist)."""
        rc = service.get(name)
        mine = rc is not None and user is not None and manifests.owner_of(rc) == user.name
        if rc is None or (not mine and not self.has_scope(ADMIN)):
            raise web.HTTPError(404, f"No Ray cluster named {name}")
        return rc

    async def model(self, service, user, rc):
        mine = user is not None and manifests.owner_of(rc) == user.name
        return {**manifests.model(rc, token=await service.token(rc) if mine else None),
                **idle.lifetime_fields(self.crater, service, rc)}

    def quota(self, user):
        groups = [g.name for g in user.groups]
        return self.crater.quota_policy().for_user(groups, user.admin)


class ClusterListAPIHandler(RayBase):
    async def get(self):
        self.require(USE)
        user = self.viewer()
        everyone = self.get_argument("all", "") in ("1", "true", "yes") or user is None
        if everyone and not self.has_scope(ADMIN):
            raise web.HTTPError(403, f"all=1 requires the {ADMIN} scope")
        service = await self.service(user)
        found = service.of(None if everyone else user.name)
        self.write({"clusters": [await self.model(service, user, rc) for rc in found]})

    async def post(self):
        self.require(USE)
        user = self.user()
        body = self.get_json_body()
        crater = self.crater
        service = await self.service(user)
        image = manifests.hub_image(crater)
        try:
            request = options.parse(body, crater.ray_max_workers)
            datasets = await choices_for(crater, request.workload.get("datasets"), user.admin)
            catalog = {a.slug: a for a in service.inventory.accelerators()}
            spec = workload.resolve(request.workload, crater.profile_list(), user.name,
                                    [g.name for g in user.groups], catalog, default_image=image,
                                    datasets=datasets)
            if spec.image is not None and spec.image != image and crater.ray_version not in spec.image:
                raise workload.PolicyError(
                    f"image {spec.image!r} does not name Ray {crater.ray_version}, the version this "
                    f"hub runs (Crater.ray_version); leave 'image' out for {image}")
            server, pod = (self._server(user, request.server) if request.lifetime == "server"
                           else (None, None))
            rc = manifests.configured(
                crater, name=manifests.cluster_name(user.name, request.name),
                namespace=service.namespace, owner=user.name, spec=spec, workers=request.workers,
                image=spec.image, lifetime=request.lifetime, server=server, owner_pod=pod)
            created = await service.create(user.name, rc, self.quota(user))
        except workload.PolicyError as e:
            self.fail(e)
        self.set_status(201)
        self.write({**manifests.model(created), **idle.lifetime_fields(crater, service, created)})

    def _server(self, user, name):
        """``(server name, pod metadata)`` of the server the cluster goes with: the one named,
        else the one whose API token makes this call; 400 when neither is running."""
        if name is None:
            name = self._calling_server(user)
            if name is None:
                raise workload.PolicyError(
                    "server: name one of your running servers ('' for the default one); this "
                    "call is not made with a server's token")
        spawner = user.spawners.get(name) if name in user.orm_user.orm_spawners else None
        pod = None
        if spawner is not None and spawner.ready:
            pod = service_for(self.crater, spawner.namespace).server_pod(spawner)
        if pod is None:
            shown = repr(name) if name else "'' (your default server)"
            raise workload.PolicyError(f"server {shown} is not running; start it first, or name "
                                       "a running server in 'server'")
        return name, pod


    def _calling_server(self, user):
        """The server whose API token makes this call: JupyterHub notes a server's token as
        ``Server at <its URL>`` (kept across hub restarts, unlike ``spawner.api_token``)."""
        token = self.get_token()  # the ORM token of this request
        note = getattr(token, "note", None) or ""
        if getattr(token, "user", None) is None or token.user.name != user.name:
            return None
        for name in user.orm_user.orm_spawners:
            url = url_path_join(user.base_url, url_escape_path(name), "/")
            if note == f"Server at {url}":
                return name
        return None


class ClusterAPIHandler(RayBase):
    async def get(self, name):
        self.require(USE)
        user = self.viewer()
        service = await self.service(user)
        self.write(await self.model(service, user, self.find(service, user, name)))

    async def patch(self, name):
        self.require(USE)
        user = self.user()
        service = await self.service(user)
        rc = self.find(service, user, name)
        body = self.get_json_body()
        try:
            if not isinstance(body, dict) or set(body) != {"workers"}:
                raise workload.PolicyError("the body must be {\"workers\": n}: only workers can change")
            count = options.workers(body["workers"], self.crater.ray_max_workers)
            owner = manifests.owner_of(rc)
            quota = self.quota(user) if owner == user.name else None  # an admin's scale: no check
            updated = await service.scale(owner, rc, count, quota)
        except workload.PolicyError as e:
            self.fail(e)
        self.write(await self.model(service, user, updated))

    async def delete(self, name):
        self.require(USE)
        user = self.user()
        service = await self.service(user)
        self.find(service, user, name)
        await service.delete(name)
        self.set_status(204)


class DashboardProxyHandler(RayBase, WebSocketHandler):
    """Any request under ``/hub/crater/ray/{cluster}/dashboard/`` to the head's dashboard
    (which serves the Jobs API), with the cluster's token instead of the caller's.

    Responses stream: each chunk the head sends is written and flushed as it comes (the
    dashboard's streaming endpoints, large downloads), nothing is held whole in the hub. A
    websocket upgrade (``JobSubmissionClient.tail_job_logs`` reads
    ``/api/jobs/{id}/logs/tail`` over one) is proxied as a websocket: the hub connects to the
    head with the token first (502 if it cannot), then accepts the caller's and relays messages
    both ways until either side closes.
    """

    _upstream = None  # the websocket to the head, once connected
    _client_gone = False

    async def _proxy(self, name, path):
        self.require(USE)
        user = self.user()
        service = await self.service(user)
        rc = self.find(service, user, name)
        head = ((rc.get("status") or {}).get("head") or {}).get("podIP")
        token = await service.token(rc)
        if not head or token is None:
            raise web.HTTPError(503, f"Ray cluster {name} has no running head yet")
        service.touch(name)  # dashboard use keeps a lifetime "idle" cluster alive
        query = f"?{self.request.query}" if self.request.query else ""
        url = f"{head}:{manifests.DASHBOARD_PORT}/{path}{query}"
        headers = {k: v for k, v in self.request.headers.get_all()
                   if k.lower() not in DROPPED_REQUEST and k.lower() not in WEBSOCKET_REQUEST}
        headers["Authorization"] = f"Bearer {token}"
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            await self._socket(name, f"ws://{url}", headers, path)
        else:
            await self._stream(name, f"http://{url}", headers)

    get = post = put = patch = delete = _proxy

    async def _stream(self, name, url, headers):
        """Relay one HTTP exchange, writing the head's body as it arrives."""
        started = False

        def on_header(line):
            nonlocal started
            line = line.rstrip("\r\n")
            if line.startswith("HTTP/"):
                start = httputil.parse_response_start_line(line)
                if start.code >= 200:  # (a 1xx interim answer is not relayed)
                    self.set_status(start.code, start.reason)
                    self.clear_header("Content-Type")
                    started = True
            elif started and ":" in line:
                key, value = line.split(":", 1)
                if key.lower() in PASSED_RESPONSE:
                    self.add_header(key.strip(), value.strip())

        def on_chunk(chunk):
            if self._client_gone:  # the caller left: stop reading from the head
                raise StreamClosedError()
            self.write(chunk)
            self.flush()

        body = self.request.body if self.request.method in ("POST", "PUT", "PATCH") else None
        try:
            response = await AsyncHTTPClient().fetch(
                url, method=self.request.method, headers=headers, body=body,
                allow_nonstandard_methods=True, follow_redirects=False, raise_error=False,
                connect_timeout=CONNECT_TIMEOUT, request_timeout=PROXY_TIMEOUT,
                decompress_response=True, header_callback=on_header, streaming_callback=on_chunk)
        except (OSError, HTTPClientError) as e:
            error = e
        else:
            error = response.error if response.code == 599 else None
        if error is not None and not self._headers_written and not self._client_gone:
            self.clear()
            raise web.HTTPError(502, f"Ray cluster {name}'s dashboard did not answer: {error}")
        if error is not None:
            log.info("Ray cluster %s: a streamed answer ended early: %s", name, error)

    async def _socket(self, name, url, headers, path):
        try:
            self._upstream = await websocket_connect(
                HTTPRequest(url, headers=headers, connect_timeout=CONNECT_TIMEOUT,
                            request_timeout=CONNECT_TIMEOUT))
        except (OSError, HTTPClientError, WebSocketClosedError) as e:
            code = getattr(e, "code", 599)  # the head's refusal (404, 401...) is passed on
            raise web.HTTPError(code if 400 <= code < 599 else 502,
                                f"Ray cluster {name}'s dashboard did not accept a websocket on "
                                f"/{path}: {e}") from None
        await WebSocketHandler.get(self)  # accepts, then returns when the caller's side closes

    def open(self, *args, **kwargs):
        self._relay = asyncio.ensure_future(self._head_to_caller())

    async def _head_to_caller(self):
        while (message := await self._upstream.read_message()) is not None:
            try:
                await self.write_message(message, binary=isinstance(message, bytes))
            except WebSocketClosedError:
                break
        self.close(self._upstream.close_code, self._upstream.close_reason)

    async def on_message(self, message):
        if self._upstream is not None:
            try:
                await self._upstream.write_message(message, binary=isinstance(message, bytes))
            except WebSocketClosedError:
                self.close()

    def on_close(self):
        self._client_gone = True
        if self._upstream is not None:
            self._upstream.close()

    def check_origin(self, origin):
        """Every browser's websocket is refused (a browser sends ``Origin``): the dashboard's web
        app does not run through the hub (its scripts would act with the viewer's hub session),
        only token clients (``tail_job_logs``, ``ray job submit``), which send no ``Origin``."""
        return False


default_handlers = [
    (r"/api/crater/ray/clusters/?", ClusterListAPIHandler),
    (r"/api/crater/ray/clusters/([a-z0-9-]{1,53})/?", ClusterAPIHandler),
    (r"/crater/ray/([a-z0-9-]{1,53})/dashboard/(.*)", DashboardProxyHandler),
]
