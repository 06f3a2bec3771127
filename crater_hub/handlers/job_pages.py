"""Pages of the job queue: ``/hub/crater/jobs`` (my jobs and the submit form), ``/hub/crater/jobs/{id}``
(one job: details, live log tail, events, cancel) and ``/hub/crater/admin/jobs`` (every queue and
job, for holders of ``custom:crater:admin``); and ``/hub/crater/static/``, our scripts.

The pages are shells: their script (``static/crater/jobs.js``) reads and changes everything
through the REST API (``/hub/api/crater/jobs``, ``/hub/api/crater/profiles``) with the page's
xsrf token, so a page shows exactly what the API says, and keeps itself current without a reload.
"""

import hashlib
from functools import lru_cache
from pathlib import Path

from jupyterhub.handlers.base import BaseHandler
from jupyterhub.handlers.static import CacheControlStaticFilesHandler
from tornado import web

from .base import ADMIN, USE, crater_settings

STATIC = Path(__file__).resolve().parent.parent / "static"
REFRESH_SECONDS = 5  # how often the pages poll the API


@lru_cache(maxsize=64)
def _version(path, mtime):
    return hashlib.sha256((STATIC / path).read_bytes()).hexdigest()[:12]


def static_url(base_url, path):
    """The URL of ``static/<path>``, versioned by content so browsers cache it safely."""
    version = _version(path, (STATIC / path).stat().st_mtime_ns)
    return f"{base_url}crater/static/{path}?v={version}"


def page_scripts(base_url, script):
    """What ``crater/scripted_page.html`` loads: the page's ``script`` and, before it,
    ``crater/common.js`` (the REST call and element helpers every page's script shares)."""
    return {"crater_script": static_url(base_url, f"crater/{script}"),
            "crater_common_script": static_url(base_url, "crater/common.js")}


class JobPageBase(BaseHandler):
    scope = USE
    template = None

    def page_data(self, *args):
        return {}

    @web.authenticated
    async def get(self, *args):
        if not self.has_scope(self.scope):
            raise web.HTTPError(403, f"This page requires the {self.scope} scope.")
        data = {
            "api_url": f"{self.hub.base_url}api/crater/",
            "pages_url": f"{self.hub.base_url}crater/",
            "refresh_seconds": REFRESH_SECONDS,
            "user": self.current_user.name,
            "is_crater_admin": self.has_scope(ADMIN),
            **self.page_data(*args),
        }
        html = await self.render_template(
            self.template, crater=data,
            **page_scripts(self.hub.base_url, "jobs.js"),
            crater_usage_script=static_url(self.hub.base_url, "crater/usage.js"))
        self.finish(html)


class JobsPage(JobPageBase):
    template = "crater/jobs.html"

    def page_data(self):
        """The priority classes this user may choose and the time limits (the queue's
        configuration). The form takes the time limit in whole minutes; the REST field
        ``max_runtime`` stays in seconds."""
        crater = crater_settings(self.settings)
        default = min(crater.job_default_runtime, crater.job_max_runtime)
        data = {"default_runtime": default, "default_runtime_minutes": _minutes(default),
                "max_runtime_minutes": crater.job_max_runtime // 60}
        classes = getattr(crater, "priority_classes", None)
        if classes is None:
            return data
        user = self.current_user
        groups = [group.name for group in user.groups]
        return {"priorities": [p.model() for p in classes() if p.access.allows(user.name, groups)],
                **data}


def _minutes(seconds):
    """Seconds as minutes for the form: whole when they are, else to a tenth."""
    return seconds // 60 if seconds % 60 == 0 else round(seconds / 60, 1)


class JobPage(JobPageBase):
    template = "crater/job.html"

    def page_data(self, job_id):
        return {"job_id": int(job_id)}


class AdminJobsPage(JobPageBase):
    scope = ADMIN
    template = "crater/admin_jobs.html"


# The notebook client (crater_hub.client) calls the jobs API with its server's token; the admin
# page is for the hub's administrators.
server_scopes = [USE]
admin_scopes = [ADMIN]

default_handlers = [
    (r"/crater/jobs/?", JobsPage),
    (r"/crater/jobs/(\d+)/?", JobPage),
    (r"/crater/admin/jobs/?", AdminJobsPage),
    (r"/crater/static/(.*)", CacheControlStaticFilesHandler, {"path": str(STATIC)}),
]
