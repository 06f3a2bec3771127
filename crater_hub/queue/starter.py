"""The job queue's life in the hub process: :data:`ROOM` starts
:class:`~crater_hub.queue.service.QueueService` once the hub has started (or on the handlers'
first use) and stops it when the hub stops; :mod:`crater_hub.hubstart` says how and why.

The service runs on the hub's ``db_url`` (or ``Crater.jobs_db_url``), in the namespace the
spawner uses unless ``Crater.jobs_namespace`` says otherwise, with the hub's users (from its
database) for quotas and priority classes.
"""

from ..hubstart import HubRoom, HubUsers, spawner_namespace


async def _start(app, crater=None):
    from ..config import Crater
    from .service import QueueService

    crater = crater or Crater.shared(app.config)
    namespace = crater.jobs_namespace or spawner_namespace(app)
    service = QueueService(crater, crater.jobs_db_url or app.db_url, HubUsers(app),
                           namespace=namespace)
    await service.start()
    return service


async def _stop(service):
    await service.stop()


ROOM = HubRoom("job queue", _start, _stop)  # logs "crater job queue stopped" when stopped


def schedule_start(c):
    """From ``setup(c)``: start the queue once the hub has started, when this is a hub's start."""
    return ROOM.schedule()


async def service_for(settings):
    """The started service of this loop, starting it now if the hub start did not."""
    return await ROOM.get(settings.get("crater"))
