"""Pages: ``/hub/crater/gpus``, the cluster's GPUs free and in use, per type and per node."""

from jupyterhub.handlers.base import BaseHandler
from tornado import web

from .capacity import USE, crater_settings, loaded_inventory


class GPUsPage(BaseHandler):
    @web.authenticated
    async def get(self):
        if not self.has_scope(USE):
            raise web.HTTPError(403, f"Viewing GPU capacity requires the {USE} scope.")
        inventory = await loaded_inventory(crater_settings(self.settings))
        html = await self.render_template("crater/gpus.html", capacity=inventory.capacity())
        self.finish(html)


default_handlers = [
    (r"/crater/gpus", GPUsPage),
]
