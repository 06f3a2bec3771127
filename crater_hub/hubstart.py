"""Rooms that start with the hub, in the hub's process, and stop when it stops: the one place
that knows how (the queue, GPU accounting, the image library and the dataset seeding use it).

JupyterHub has no start-up hook for extensions, and jobs must progress after a restart even if
nobody calls the API. What we rely on instead: ``JupyterHub.launch_instance`` runs
``initialize()`` — which loads the config file, and with it ``crater_hub.setup(c)`` — *inside*
the hub's running event loop, on the ``JupyterHub.instance()`` singleton, and ``initialize``
creates ``app._start_future`` (resolved at the end of ``start()``, once the database, users,
proxy and tornado application exist) just before it loads the config. So ``setup(c)`` calls
:meth:`HubRoom.schedule`, which, only in that situation (a running loop and an initialized
singleton whose ``_start_future`` exists: :func:`starting_hub`), schedules a task that awaits the
hub's start and then runs the room's start coroutine. Anywhere else — ``jupyterhub
--generate-config``, ``upgrade-db``, unit tests calling ``setup(c)``, a MockHub — nothing is
scheduled, and the room starts on first use (:meth:`HubRoom.get`).

Rejected alternatives: a managed service (``c.JupyterHub.services``) would be another process,
without the hub's users and caches; ``asyncio.get_event_loop().call_soon`` from ``setup`` runs
before the database exists; a spawner hook only runs when someone spawns.

The one private name used: ``app._start_future`` (JupyterHub 5.5 and 6.x have no documented
start-up hook for in-process extensions; checked in their ``app.py``); nothing else private.
Users' groups are read from the hub's database through its ORM (:class:`HubUsers`).

Shutdown: JupyterHub stops on SIGTERM/SIGINT by running its ``cleanup()`` and then cancelling
every task of the loop and waiting for them (``shutdown_cancel_tasks``). The first room started
on a loop also starts one task that does nothing but wait; cancelled, it stops every started
room (last started first), then the shared watch caches and the Kubernetes clients
(:func:`_live_until_hub_stops`), so the hub exits with no pending task and no open connection.
"""

import asyncio
import logging
import time

log = logging.getLogger("crater_hub")

_pending = set()  # strong references to scheduled start tasks and the lifetime tasks
_stoppers = {}  # event loop -> [(room, stop coroutine function)], in start order


def hub_app():
    """The hub's ``JupyterHub`` singleton when one exists in this process, else None."""
    from jupyterhub.app import JupyterHub

    return JupyterHub.instance() if JupyterHub.initialized() else None


def starting_hub():
    """The hub whose config is being loaded in its running loop (see the module docstring),
    else None (no loop, no hub, a subcommand such as ``upgrade-db``, a MockHub)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None
    app = hub_app()
    if app is None or getattr(app, "subapp", None) or not hasattr(app, "_start_future"):
        return None
    return app


def _keep(task):
    _pending.add(task)
    task.add_done_callback(_pending.discard)
    return task


def after_hub_start(name, run):
    """From ``setup(c)``: run ``await run(app)`` once the hub has started, when this is a hub's
    start (else nothing; returns whether it was scheduled). A one-shot job: its failure is
    logged, never fatal."""
    app = starting_hub()
    if app is None:
        return False

    async def when_started():
        try:
            # private: JupyterHub offers no start-up hook (see the module docstring)
            await asyncio.shield(app._start_future)
            await run(app)
        except Exception:
            log.exception("crater %s failed", name)

    _keep(asyncio.get_running_loop().create_task(when_started(), name=f"crater-{name}"))
    return True


class HubRoom:
    """One room's service in a hub process: started once per event loop (with the hub, or on
    first use), stopped when the hub stops.

    ``start(app, settings)`` is a coroutine function returning the started service
    (``settings``: what the handler passes, e.g. its ``Crater`` settings or config; None when
    started with the hub: the room reads the hub's config); ``stop``, a
    coroutine function given the service, is awaited at shutdown (None: nothing to stop).
    """

    def __init__(self, name, start, stop=None):
        self.name = name
        self._start = start
        self._stop = stop
        self._futures = {}  # event loop -> Future of the started service

    def schedule(self):
        """From ``setup(c)``: start once the hub has started, when this is a hub's start; the
        future of the service, or None when nothing was scheduled."""
        app = starting_hub()
        if app is None:
            return None
        loop = asyncio.get_running_loop()
        if loop in self._futures:
            return self._futures[loop]
        future = self._futures[loop] = loop.create_future()

        async def start_when_hub_started():
            try:
                # private: JupyterHub offers no start-up hook (see the module docstring)
                await asyncio.shield(app._start_future)
                service = await self._started(app, None)
            except Exception as e:
                log.exception("crater %s failed to start", self.name)
                future.set_exception(e)
                future.exception()  # retrieved: the handlers re-raise it per request
                self._futures.pop(loop, None)
                return
            future.set_result(service)

        _keep(loop.create_task(start_when_hub_started(), name=f"crater-{self.name}-start"))
        return future

    async def get(self, settings=None, app=None):
        """This loop's started service, starting it now (on the running hub, or ``app``) if the
        hub's start did not."""
        loop = asyncio.get_running_loop()
        future = self._futures.get(loop)
        if future is None:
            app = app if app is not None else hub_app()
            if app is None:
                raise RuntimeError(f"crater {self.name} runs inside JupyterHub only")
            future = self._futures[loop] = loop.create_future()
            try:
                future.set_result(await self._started(app, settings))
            except Exception as e:
                self._futures.pop(loop, None)
                future.set_exception(e)
                future.exception()
                raise
        return await asyncio.shield(future)

    def started(self):
        """The service if this loop has started one already (no start), else None."""
        try:
            future = self._futures.get(asyncio.get_running_loop())
        except RuntimeError:
            return None
        if future is None or not future.done() or future.exception() is not None:
            return None
        return future.result()

    async def _started(self, app, settings):
        _log_through_hub(app)
        service = await self._start(app, settings)
        loop = asyncio.get_running_loop()
        if loop not in _stoppers:
            _stoppers[loop] = []
            _keep(loop.create_task(_live_until_hub_stops(), name="crater-lifetime"))
        if self._stop is not None:
            _stoppers[loop].append((self, lambda: self._stop(service)))
        return service


def _log_through_hub(app):
    """Send crater_hub's log records through the hub's handlers, as JupyterHub does for tornado's:
    otherwise only warnings reach the hub's log (Python's last-resort handler)."""
    logger = logging.getLogger("crater_hub")
    if logger.parent is not app.log:
        logger.parent = app.log
        logger.propagate = True
        logger.setLevel(app.log.level)


async def _live_until_hub_stops():
    """Wait until cancelled (the hub's shutdown cancels every task), then stop what started."""
    try:
        await asyncio.Event().wait()
    finally:
        await stop_all()


async def stop_all():
    """Stop every room started on this loop (last first), then the shared watch caches and this
    loop's Kubernetes clients; idempotent."""
    from .kube.caches import stop_shared_caches
    from .kube.client import close_shared_clients

    loop = asyncio.get_running_loop()
    for room, stop in reversed(_stoppers.pop(loop, [])):
        room._futures.pop(loop, None)
        try:
            await stop()
        except Exception:
            log.exception("crater %s: stopping it failed", room.name)
        else:
            log.info("crater %s stopped", room.name)
    await stop_shared_caches()
    await close_shared_clients()


class HubUsers:
    """What rooms need of the hub's users: their groups and admin flag, read from the hub's
    database (its public ORM, :mod:`jupyterhub.orm`), not from its in-memory user dict."""

    #: how long an answer is reused: a change of groups reaches the rooms within this time
    FRESH = 5.0

    def __init__(self, app):
        self.app = app
        self._known = {}  # name -> (groups, is_admin)
        self._read_at = float("-inf")

    def info(self, names):
        """name -> (groups, is_admin) for each of ``names``, from the hub's database (users with
        their groups, one query) at most every FRESH seconds and for names not seen yet: the
        queue asks on every admission cycle, for every owner with a job."""
        names = set(names)
        now = time.monotonic()
        if now - self._read_at > self.FRESH:
            self._known, self._read_at = self._read(names), now
        elif not names <= self._known.keys():
            self._known.update(self._read(names - self._known.keys()))
        return {name: self._known.get(name, ([], False)) for name in names}

    def groups_of(self, name):
        """``name``'s group names (empty for an unknown user)."""
        return list(self.info([name])[name][0])

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
