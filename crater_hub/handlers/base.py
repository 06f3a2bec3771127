"""The shared base of every room's REST handlers: crater_hub's scopes, the hub's one
:class:`~crater_hub.config.Crater`, and ``require(scope)``.

Custom scopes are registered after import, so handlers check them inside the method with
``self.require(...)`` (``has_scope``) rather than JupyterHub's ``@needs_scope`` decorator.
"""

from jupyterhub.apihandlers.base import APIHandler
from tornado import web

from ..config import Crater

USE = "custom:crater:use"
ADMIN = "custom:crater:admin"

custom_scopes = {
    USE: {"description": "Use crater_hub: see GPU capacity and the profiles you may start."},
    ADMIN: {"description": "Administer crater_hub: quotas, queues, images and datasets of all users.",
            "subscopes": [USE]},
}
user_scopes = [USE]  # granted to every user by crater_hub.setup


def crater_settings(settings):
    """The hub's one validated :class:`Crater` (the spawner's and the queue's too)."""
    if "crater" not in settings:
        settings["crater"] = Crater.shared(settings.get("config"))
    return settings["crater"]


class CraterAPIHandler(APIHandler):
    """An API handler whose methods start with ``self.require(scope)``."""

    def require(self, scope):
        if not self.has_scope(scope):
            raise web.HTTPError(403, f"Action is not authorized with current scopes; requires {scope}")

    @property
    def crater(self):
        return crater_settings(self.settings)
