"""The page of Ray clusters: ``/hub/crater/ray`` (mine; everyone's for holders of
``custom:crater:admin``, on demand): state, workers, GPUs, age, lifetime — with the warning of an
idle deletion — links to each cluster's dashboard and logs through the hub's proxy, scale and
delete.

A shell like the job and dataset pages: ``static/crater/ray.js`` reads and changes everything
through ``/hub/api/crater/ray/clusters`` with the page's xsrf token and redraws every few
seconds, so the page shows what the API says (the same ``expires_at``/``idle_warning`` the
reaper of :mod:`crater_hub.ray.idle` acts on) without a reload.

The links: the dashboard's page, its jobs (``api/jobs/``) and the head's log files
(``api/v0/logs``), all through the hub's proxy. The dashboard's *app* does not run there: the
proxy answers as a hub API handler (``Content-Security-Policy: default-src 'none'``, XSRF on
cookie-authenticated reads), which is what keeps a cluster's page — whose scripts come from an
image a user may choose — from running scripts on the hub's origin. Running the app needs an
origin of its own (a per-cluster host); the JSON endpoints read fine.
"""

from jupyterhub.handlers.base import BaseHandler
from tornado import web

from .base import ADMIN, USE, crater_settings
from .job_pages import REFRESH_SECONDS, page_scripts


class RayPage(BaseHandler):
    @web.authenticated
    async def get(self):
        if not self.has_scope(USE):
            raise web.HTTPError(403, f"This page requires the {USE} scope.")
        crater = crater_settings(self.settings)
        data = {
            "api_url": f"{self.hub.base_url}api/crater/",
            "pages_url": f"{self.hub.base_url}crater/",
            "refresh_seconds": REFRESH_SECONDS,
            "user": self.current_user.name,
            "is_crater_admin": self.has_scope(ADMIN),
            "max_workers": crater.ray_max_workers,
            "idle_timeout": crater.ray_idle_timeout,
        }
        html = await self.render_template(
            "crater/ray.html", crater=data,
            **page_scripts(self.hub.base_url, "ray.js"))
        self.finish(html)


default_handlers = [
    (r"/crater/ray/?", RayPage),
]
