"""Pages of datasets: ``/hub/crater/datasets`` (mine, my groups', shared with me, public and
catalog; create in my space or a group's,
share with a user or group, unshare, delete; where each is mounted now) and
``/hub/crater/admin/datasets`` (every dataset with its owner, shares and mounts).

Shells like the job pages: ``static/crater/datasets.js`` reads and changes everything through
``/hub/api/crater/datasets`` with the page's xsrf token. The share picker suggests the hub's
users and groups (at most :data:`MAX_SUGGESTIONS` of each, read from the hub's ORM, which
JupyterHub itself reads on the loop for every page).
"""

from jupyterhub import orm
from jupyterhub.handlers.base import BaseHandler
from tornado import web

from .capacity import ADMIN, USE, crater_settings
from .job_pages import REFRESH_SECONDS, page_scripts

MAX_SUGGESTIONS = 500


class DatasetsPageBase(BaseHandler):
    scope = USE
    page = "mine"

    @web.authenticated
    async def get(self):
        if not self.has_scope(self.scope):
            raise web.HTTPError(403, f"This page requires the {self.scope} scope.")
        crater = crater_settings(self.settings)
        data = {
            "api_url": f"{self.hub.base_url}api/crater/",
            "refresh_seconds": REFRESH_SECONDS,
            "user": self.current_user.name,
            "my_groups": sorted(g.name for g in self.current_user.groups),
            "is_crater_admin": self.has_scope(ADMIN),
            "page": self.page,
            "can_create": bool(crater.datasets_volume),
            "own_path": crater.datasets_own_path if crater.datasets_volume else None,
            "users": [u.name for u in self.db.query(orm.User.name).order_by(orm.User.name)
                      .limit(MAX_SUGGESTIONS)],
            "groups": [g.name for g in self.db.query(orm.Group.name).order_by(orm.Group.name)
                       .limit(MAX_SUGGESTIONS)],
        }
        html = await self.render_template(
            "crater/datasets.html", crater=data,
            **page_scripts(self.hub.base_url, "datasets.js"))
        self.finish(html)


class DatasetsPage(DatasetsPageBase):
    pass


class AdminDatasetsPage(DatasetsPageBase):
    scope = ADMIN
    page = "admin"


default_handlers = [
    (r"/crater/datasets/?", DatasetsPage),
    (r"/crater/admin/datasets/?", AdminDatasetsPage),
]
