"""REST: what the cluster has free (``/api/crater/capacity``) and what this user may start
(``/api/crater/profiles``), both read from the shared inventory — no Kubernetes call per request.

Guarded by ``custom:crater:use``, which ``crater_hub.setup`` grants to every user. Custom scopes
are registered after import, so they are checked inside the handlers with ``has_scope``.
"""

from jupyterhub.user import User

from ..kube.inventory import shared_inventory

# re-exported: other rooms' handlers import these from here (they moved to handlers/base.py)
from .base import ADMIN, USE, CraterAPIHandler, crater_settings, custom_scopes, user_scopes

__all__ = ["ADMIN", "USE", "CraterAPIHandler", "crater_settings", "custom_scopes",
           "user_scopes", "loaded_inventory", "CapacityAPIHandler", "ProfilesAPIHandler"]


async def loaded_inventory(crater):
    """The shared inventory for the configured accelerators, once its caches have loaded."""
    inventory = shared_inventory(crater.accelerator_catalog())
    await inventory.ready()
    return inventory


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
