"""The Ray room's life in the hub process: :data:`ROOM` starts, with the hub, the shared watch
cache of the servers' namespace's RayClusters (so that clusters surviving a hub restart count in
the quota ledger at once, not on the first Ray request) and the idle :class:`~.idle.Reaper`;
it stops the reaper when the hub stops (the caches stop with the hub's, :mod:`crater_hub.hubstart`).

The start waits on nothing: without KubeRay's CRD the cache backs off and retries on its own, the
reaper waits for the cache's first LIST, and requests keep their own bounded wait (503).
"""

from ..hubstart import HubRoom, spawner_namespace


async def _start(app, crater=None):
    from ..config import Crater
    from .clusters import service_for
    from .idle import Reaper

    crater = crater or Crater.shared(app.config)
    namespace = spawner_namespace(app) or "default"
    return Reaper(crater, service_for(crater, namespace)).start()


async def _stop(reaper):
    await reaper.stop()


ROOM = HubRoom("Ray clusters", _start, _stop)


def schedule_start(c):
    """From ``setup(c)``: start the Ray room once the hub has started, when this is a hub's start."""
    return ROOM.schedule()
