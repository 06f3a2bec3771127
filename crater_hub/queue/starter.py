"""Starting the queue with the hub, in the hub's process, without a request to trigger it.

JupyterHub has no startup hook for extensions, and jobs must progress after a restart even if
nobody calls the API. What we rely on instead: ``JupyterHub.launch_instance`` runs
``initialize()`` — which loads the config file, and with it ``crater_hub.setup(c)`` — *inside*
the hub's running event loop, on the ``JupyterHub.instance()`` singleton, and ``initialize``
creates ``app._start_future`` (resolved at the end of ``start()``, once the database, users,
proxy and tornado application exist) just before it loads the config. So ``setup(c)`` calls
:func:`schedule_start`, which, only in that situation (a running loop and an initialized
singleton whose ``_start_future`` exists), schedules a task that awaits the hub's start and then
starts :class:`~crater_hub.queue.service.QueueService` on the hub's ``db_url`` (or
``Crater.jobs_db_url``), with the hub's users for quotas. Anywhere else — ``jupyterhub
--generate-config``, ``upgrade-db``, unit tests calling ``setup(c)``, a MockHub — nothing is
scheduled, and the API handlers start the service lazily on first use (:func:`service_for`).

Rejected alternatives: a managed service (``c.JupyterHub.services``) would be another process,
without the hub's users and caches; ``asyncio.get_event_loop().call_soon`` from ``setup`` runs
before the database exists; a spawner hook only runs when someone spawns.
"""

import asyncio
import logging

log = logging.getLogger("crater_hub.queue")

_services = {}  # event loop -> Future of the started QueueService
_pending = set()  # strong references to scheduled start tasks


class HubUsers:
    """What the queue needs of the hub's users: their groups and admin flag (for quotas and
    priority classes). What their servers hold, it reads from the quota ledger."""

    def __init__(self, app):
        self.app = app

    def info(self, names):
        """name -> (groups, is_admin) for each of ``names``.

        Users are found in the hub's in-memory user cache (one pass over it), and only those not
        there yet are looked up by name, which is a database query each in JupyterHub's UserDict:
        this runs on every admission cycle, for every owner with a job."""
        cached = {user.name: user for user in dict.values(self.app.users)}
        out = {}
        for name in names:
            user = cached.get(name) or self.app.users.get(name)
            out[name] = ([], False) if user is None else ([g.name for g in user.groups], user.admin)
        return out


def _hub_app():
    from jupyterhub.app import JupyterHub

    return JupyterHub.instance() if JupyterHub.initialized() else None


def schedule_start(c):
    """From ``setup(c)``: start the queue once the hub has started, when this is a hub's start."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    app = _hub_app()
    if app is None or getattr(app, "subapp", None) or not hasattr(app, "_start_future"):
        return None
    if loop in _services:
        return _services[loop]
    future = _services[loop] = loop.create_future()

    async def start_when_hub_started():
        try:
            await asyncio.shield(app._start_future)
            service = await _start(app)
        except Exception as e:
            log.exception("crater job queue failed to start")
            future.set_exception(e)
            future.exception()  # retrieved: the handlers re-raise it per request
            _services.pop(loop, None)
            return
        future.set_result(service)

    task = loop.create_task(start_when_hub_started(), name="crater-queue-start")
    _pending.add(task)
    task.add_done_callback(_pending.discard)
    return future


def _log_through_hub(app):
    """Send crater_hub's log records through the hub's handlers, as JupyterHub does for tornado's:
    otherwise only warnings reach the hub's log (Python's last-resort handler)."""
    logger = logging.getLogger("crater_hub")
    if logger.parent is not app.log:
        logger.parent = app.log
        logger.propagate = True
        logger.setLevel(app.log.level)


async def _start(app, crater=None):
    from ..config import Crater
    from .service import QueueService

    _log_through_hub(app)
    crater = crater or Crater.shared(app.config)
    service = QueueService(crater, crater.jobs_db_url or app.db_url, HubUsers(app))
    await service.start()
    return service


async def service_for(settings):
    """The started service of this loop, starting it now if the hub start did not."""
    loop = asyncio.get_running_loop()
    future = _services.get(loop)
    if future is None:
        app = _hub_app()
        if app is None:
            raise RuntimeError("the crater job queue runs inside JupyterHub only")
        future = _services[loop] = loop.create_future()
        try:
            future.set_result(await _start(app, settings.get("crater")))
        except Exception as e:
            _services.pop(loop, None)
            future.set_exception(e)
            raise
    return await asyncio.shield(future)
