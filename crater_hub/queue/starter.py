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

The one private name used: ``app._start_future`` (JupyterHub 5.5 and 6.x have no documented
start-up hook for in-process extensions; checked in their ``app.py``); nothing else private.
Users are read from the hub's database through its ORM (:mod:`jupyterhub.orm`).

Shutdown: JupyterHub stops on SIGTERM/SIGINT by running its ``cleanup()`` and then cancelling
every task of the loop and waiting for them (``shutdown_cancel_tasks``). The started queue owns
a task that does nothing but wait; cancelled, it stops the queue, the shared watch caches and
the Kubernetes clients before it ends (:func:`_live_until_hub_stops`), so the hub exits with no
pending task and no open connection.
"""

import asyncio
import logging
import time

log = logging.getLogger("crater_hub.queue")

_services = {}  # event loop -> Future of the started QueueService
_pending = set()  # strong references to scheduled start tasks


class HubUsers:
    """What the queue needs of the hub's users: their groups and admin flag (for quotas and
    priority classes). What their servers hold, it reads from the quota ledger."""

    #: how long an answer is reused: a change of groups reaches admission within this time
    FRESH = 5.0

    def __init__(self, app):
        self.app = app
        self._known = {}  # name -> (groups, is_admin)
        self._read_at = float("-inf")

    def info(self, names):
        """name -> (groups, is_admin) for each of ``names``, from the hub's database (users with
        their groups, one query) at most every FRESH seconds and for names not seen yet: this
        runs on every admission cycle, for every owner with a job."""
        names = set(names)
        now = time.monotonic()
        if now - self._read_at > self.FRESH:
            self._known, self._read_at = self._read(names), now
        elif not names <= self._known.keys():
            self._known.update(self._read(names - self._known.keys()))
        return {name: self._known.get(name, ([], False)) for name in names}

    def _read(self, names):
        from jupyterhub import orm
        from sqlalchemy.orm import selectinload

        if not names:
            return {}
        out = dict.fromkeys(names, ([], False))
        ordered = sorted(names)
        for start in range(0, len(ordered), 500):  # old SQLite builds allow 999 parameters
            rows = self.app.db.query(orm.User).options(selectinload(orm.User.groups)).filter(
                orm.User.name.in_(ordered[start:start + 500])).all()
            for user in rows:
                out[user.name] = ([g.name for g in user.groups], bool(user.admin))
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
            # private: JupyterHub offers no start-up hook (see the module docstring)
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


def spawner_namespace(app):
    """The namespace the hub's KubeSpawner puts servers in, as its configuration says (the most
    derived class's section first, as traitlets reads it), else KubeSpawner's own default; None
    when the spawner is no KubeSpawner or each user has a namespace of their own."""
    from kubespawner import KubeSpawner

    cls = app.spawner_class
    if not (isinstance(cls, type) and issubclass(cls, KubeSpawner)):
        return None

    def configured(name, default):
        for klass in cls.mro():
            section = app.config.get(klass.__name__) if klass.__name__ in app.config else None
            if section is not None and name in section:
                return section[name]
        return default

    if configured("enable_user_namespaces", False):
        return None
    return configured("namespace", None) or KubeSpawner._namespace_default(None)


async def _start(app, crater=None):
    from ..config import Crater
    from .service import QueueService

    _log_through_hub(app)
    crater = crater or Crater.shared(app.config)
    namespace = crater.jobs_namespace or spawner_namespace(app)
    service = QueueService(crater, crater.jobs_db_url or app.db_url, HubUsers(app),
                           namespace=namespace)
    await service.start()
    task = asyncio.get_running_loop().create_task(_live_until_hub_stops(service),
                                                  name="crater-queue-lifetime")
    _pending.add(task)
    task.add_done_callback(_pending.discard)
    return service


async def _live_until_hub_stops(service):
    """Wait until cancelled (the hub's shutdown cancels every task), then stop the queue, the
    shared watch caches and this loop's Kubernetes clients."""
    try:
        await asyncio.Event().wait()
    finally:
        await shutdown(service)


async def shutdown(service):
    """Stop ``service`` and what it started on this loop; idempotent."""
    from ..kube.caches import stop_shared_caches
    from ..kube.client import close_shared_clients

    loop = asyncio.get_running_loop()
    _services.pop(loop, None)
    try:
        await service.stop()
    except Exception:
        log.exception("crater job queue: stopping it failed")
    await stop_shared_caches()
    await close_shared_clients()
    log.info("crater job queue stopped")


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
