"""REST of the image library and commits: ``/hub/api/crater/images`` (list, import),
``/images/{id}`` (get, delete), ``/images/{id}/shares``, ``/images/commits`` (save a running
server), ``/images/commits/{id}`` and ``/images/commits/{id}/logs``.

Thin: parse, authorize (``custom:crater:use``; an admin may commit and see everyone's; another
user's server, commit or image is a 404), one call to :mod:`crater_hub.images`, JSON out.
"""

import json

from jupyterhub.handlers.base import BaseHandler
from jupyterhub.user import User
from tornado import web

from ..images.service import ImageError
from ..images.starter import image_service
from ..kube.inventory import shared_inventory
from .capacity import ADMIN, USE, CraterAPIHandler
from .job_pages import page_scripts

NOT_IN_IMAGE = ("The home directory and dataset mounts are not part of an image: only changes to the "
                "server's own filesystem (packages, files outside the home) are saved.")
SCOPES = ("all", "mine", "shared", "public", "admin")


class ImagesBase(CraterAPIHandler):
    async def service(self):
        return await image_service(self.settings.get("config"))

    def who(self):
        user = self.current_user
        if isinstance(user, User):
            return user.name, [g.name for g in user.groups], self.has_scope(ADMIN)
        return None, [], self.has_scope(ADMIN)

    def body(self, allowed):
        body = self.get_json_body() or {}
        if not isinstance(body, dict):
            raise web.HTTPError(400, "the body must be a JSON object")
        unknown = sorted(set(body) - set(allowed))
        if unknown:
            raise web.HTTPError(400, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
        return body

    async def call(self, coro):
        try:
            return await coro
        except ImageError as e:
            raise web.HTTPError(e.status, e.message) from None


class ImageListAPIHandler(ImagesBase):
    async def get(self):
        self.require(USE)
        scope = self.get_argument("scope", "all")
        if scope not in SCOPES:
            raise web.HTTPError(400, f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        service = await self.service()
        user, groups, admin = self.who()
        s = service.settings
        self.write({"images": service.library(user, groups, admin and user is None, scope),
                    "enabled": s.enabled, "disabled_reason": None if s.enabled else s.why_disabled,
                    "registry": s.host or None, "note": NOT_IN_IMAGE})

    async def post(self):
        """Import an external image reference after a manifest check."""
        self.require(USE)
        body = self.body(("image", "name", "description"))
        user, _, _ = self.who()
        if user is None:
            raise web.HTTPError(400, "only a user imports images into their library")
        service = await self.service()
        model = await self.call(service.import_image(user, body.get("image"), body.get("name"),
                                                     body.get("description", "")))
        self.set_status(201)
        self.write(model)


class ImageAPIHandler(ImagesBase):
    async def get(self, image_id):
        self.require(USE)
        service = await self.service()
        user, groups, admin = self.who()
        model = service.find_image(image_id, user, groups, admin)
        if model is None:
            raise web.HTTPError(404, f"No image {image_id}")
        self.write(model)

    async def delete(self, image_id):
        self.require(USE)
        service = await self.service()
        user, _, admin = self.who()
        self.write(await self.call(service.delete(image_id, user, admin)))


class ImageSharesAPIHandler(ImagesBase):
    async def put(self, image_id):
        self.require(USE)
        body = self.body(("users", "groups", "public"))
        service = await self.service()
        user, _, admin = self.who()
        self.write(await self.call(service.share(image_id, user, admin, body.get("users"), body.get("groups"),
                                                 body.get("public"))))

    post = put


class CommitListAPIHandler(ImagesBase):
    async def get(self):
        self.require(USE)
        service = await self.service()
        user, _, admin = self.who()
        everyone = self.get_argument("all", "") in ("1", "true", "yes")
        self.write({"commits": await service.commits(user, admin, everyone)})

    async def post(self):
        """Save a running server as an image."""
        self.require(USE)
        body = self.body(("server", "name", "tag", "description", "user"))
        caller, _, admin = self.who()
        owner_name = body.get("user") or caller
        if owner_name is None:
            raise web.HTTPError(400, "user: a service must name the user whose server to commit")
        if owner_name != caller and not admin:
            raise web.HTTPError(404, f"No server {body.get('server', '')!r} of user {owner_name}")
        server = body.get("server", "")
        if not isinstance(server, str):
            raise web.HTTPError(400, "server must be a server name ('' for the default server)")
        owner = self.find_user(owner_name)
        if owner is None or server not in owner.orm_user.orm_spawners:
            raise web.HTTPError(404, f"No server {server!r} of user {owner_name}")
        spawner = owner.spawners[server]
        if not spawner.ready or not getattr(spawner, "pod_name", None):
            raise web.HTTPError(409, f"server {server or '(default)'} of {owner_name} is not running; "
                                     "start it to save it as an image")
        pod = await self._pod(spawner)
        if pod is None:
            raise web.HTTPError(409, f"server {server or '(default)'} of {owner_name} has no running pod")
        service = await self.service()
        model = await self.call(service.commit(
            owner=owner_name, requester=caller or owner_name, server=server, pod=pod, container="notebook",
            name=body.get("name"), tag=body.get("tag", "latest"), description=body.get("description", ""),
            admin=owner.admin or (admin and owner_name != caller)))
        self.set_status(201)
        self.write(model)

    async def _pod(self, spawner):
        cache = shared_inventory(self.crater.accelerator_catalog()).pod_cache
        await cache.ready()
        pod = cache.get(spawner.pod_name, spawner.namespace)
        if pod is None or (pod.get("status") or {}).get("phase") != "Running":
            return None
        return pod


class CommitAPIHandler(ImagesBase):
    async def get(self, commit_id):
        self.require(USE)
        service = await self.service()
        user, _, admin = self.who()
        wait = self.get_argument("wait", "")
        if wait:  # long poll: answer when it changed, or after at most `wait` seconds
            try:
                await service.wait_commit(commit_id, min(float(wait), 30.0))
            except ValueError:
                raise web.HTTPError(400, f"wait must be seconds, got {wait!r}") from None
        model = await service.commit_view(commit_id, user, admin)
        if model is None:
            raise web.HTTPError(404, f"No commit {commit_id}")
        self.write(model)


class CommitLogsAPIHandler(ImagesBase):
    async def get(self, commit_id):
        self.require(USE)
        service = await self.service()
        user, _, admin = self.who()
        text = await service.commit_log(commit_id, user, admin)
        if text is None:
            raise web.HTTPError(404, f"No commit {commit_id}")
        self.write(json.dumps({"log": text}))


class ImagesPage(BaseHandler):
    """``/hub/crater/images``: the library and my commits, drawn by ``static/crater/images.js``."""

    @web.authenticated
    async def get(self):
        if not self.has_scope(USE):
            raise web.HTTPError(403, f"This page requires the {USE} scope.")
        data = {"api_url": f"{self.hub.base_url}api/crater/", "pages_url": f"{self.hub.base_url}crater/",
                "user": self.current_user.name}
        html = await self.render_template("crater/images.html", crater=data,
                                          **page_scripts(self.hub.base_url, "images.js"))
        self.finish(html)


default_handlers = [
    (r"/crater/images/?", ImagesPage),
    (r"/api/crater/images", ImageListAPIHandler),
    (r"/api/crater/images/commits", CommitListAPIHandler),
    (r"/api/crater/images/commits/([0-9]+)", CommitAPIHandler),
    (r"/api/crater/images/commits/([0-9]+)/logs", CommitLogsAPIHandler),
    (r"/api/crater/images/([^/]+)", ImageAPIHandler),
    (r"/api/crater/images/([^/]+)/shares", ImageSharesAPIHandler),
]
