"""REST: what the cluster has free (``/api/crater/capacity``) and what this user may start
(``/api/crater/profiles``), both read from the shared inventory — no Kubernetes call per request.

Guarded by ``custom:crater:use``, which ``crater_hub.setup`` grants to every user. Custom scopes
are registered after import, so they are checked inside the handlers with ``has_scope``.
"""

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.user import User
from tornado import web

from ..config import Crater
from ..kube.inventory import shared_inventory

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


async def loaded_inventory(crater):
    """The shared inventory for the configured accelerators, once its caches have loaded."""
    inventory = shared_inventory(crater.accelerator_catalog())
    await inventory.ready()
    return inventory


class CraterAPIHandler(APIHandler):
    """An API handler whose methods start with ``self.require(scope)``."""

    def require(self, scope):
        if not self.has_scope(scope):
            raise web.HTTPError(403, f"Action is not authorized with current scopes; requires {scope}")

    @property
    def crater(self):
        return crater_settings(self.settings)


class CapacityAPIHandler(CraterAPIHandler):
    async def get(self):
        self.require(USE)
        self.set_header("Content-Type", "application/json")
        inventory = await loaded_inventory(self.crater)
        self.write(inventory.capacity_json())  # memoized until the cluster changes


class ProfilesAPIHandler(CraterAPIHandler):
    async def get(self):
        self.require(USE)
        user = self.current_user
        spawner = user.spawner if isinstance(user, User) else None
        if not getattr(spawner, "crater_enabled", False):
            self.write(_no_profiles(user, spawner))
            return
        self.write(await spawner.offer())


def _no_profiles(user, spawner):
    if not isinstance(user, User):
        note = "only users have profiles; this request is authenticated as a service"
    elif spawner is None or not hasattr(spawner, "crater_enabled"):
        note = "the hub's spawner is not CraterSpawner: its profiles are not crater profiles"
    else:
        note = "no crater profiles are configured (Crater.profiles is empty)"
    return {"profiles": [], "quota": None, "servers_running": None, "updated": None, "note": note}


default_handlers = [
    (r"/api/crater/capacity", CapacityAPIHandler),
    (r"/api/crater/profiles", ProfilesAPIHandler),
]
