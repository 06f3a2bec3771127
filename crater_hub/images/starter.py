"""The one :class:`~crater_hub.images.service.ImageService` of a hub process, started on first use.

The handlers, the spawner (image choices) and the job queue (allowed images) all ask
:func:`image_service`; the first call builds it from the hub's config (``c.CraterImages``) and
database and starts it, later calls on the same loop get the same one.
"""

import asyncio

from .service import ImageService
from .settings import CraterImages

_services = {}  # event loop -> Future of the started ImageService


def _hub_app():
    from jupyterhub.app import JupyterHub

    return JupyterHub.instance() if JupyterHub.initialized() else None


def settings_for(config):
    return CraterImages(config=config)


async def image_service(config=None, db_url=None):
    """This loop's started service (config and database: the running hub's by default)."""
    loop = asyncio.get_running_loop()
    future = _services.get(loop)
    if future is None:
        future = _services[loop] = loop.create_future()
        try:
            app = _hub_app()
            config = config if config is not None else app.config
            settings = settings_for(config)
            backend = settings.commit_backend_class(settings, parent=settings)
            service = ImageService(settings, db_url or settings_db_url(app), backend)
            future.set_result(await service.start())
        except Exception as e:
            _services.pop(loop, None)
            future.set_exception(e)
            future.exception()
            raise
    return await asyncio.shield(future)


def settings_db_url(app):
    if app is None:
        raise RuntimeError("the image library runs inside JupyterHub only")
    return app.db_url


def started_service():
    """The service if this loop has one already (no start), else None."""
    try:
        future = _services.get(asyncio.get_running_loop())
    except RuntimeError:
        return None
    return future.result() if future is not None and future.done() and not future.exception() else None
