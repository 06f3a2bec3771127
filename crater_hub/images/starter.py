"""The one :class:`~crater_hub.images.service.ImageService` of a hub process, started on first use.

The handlers, the spawner (image choices) and the job queue (allowed images) all ask
:func:`image_service`; the first call builds it from the hub's config (``c.CraterImages``) and
database and starts it, later calls on the same loop get the same one (:class:`HubRoom`).
"""

from ..hubstart import HubRoom
from .service import ImageService
from .settings import CraterImages


def settings_for(config):
    return CraterImages(config=config)


async def _start(app, config=None):
    settings = settings_for(config if config is not None else app.config)
    backend = settings.commit_backend_class(settings, parent=settings)
    return await ImageService(settings, app.db_url, backend).start()


ROOM = HubRoom("image library", _start)


async def image_service(config=None):
    """This loop's started service (config: the running hub's by default; database: the hub's)."""
    return await ROOM.get(config)


def started_service():
    """The service if this loop has one already (no start), else None."""
    return ROOM.started()
