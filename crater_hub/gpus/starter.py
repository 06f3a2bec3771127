"""Starting GPU accounting with the hub, in the hub's process, the way the job queue starts.

``crater_hub.setup(c)`` calls :func:`schedule_start`; when ``c`` is being loaded by a starting
hub (a running loop, an initialized ``JupyterHub`` singleton with ``_start_future``: see
:mod:`crater_hub.queue.starter` for why this is the hook), a task awaits the hub's start and then
starts :class:`~crater_hub.gpus.accounting.Accounting` on the hub's database (or
``Crater.jobs_db_url``), the shared pod and node caches and the hub's users. Anywhere else
nothing is scheduled, and :func:`accounting_for` starts it on first use (a MockHub, a
handler's first request).

The queue's starter is not reused: a room does not import a sibling room.
"""

import asyncio
import logging

log = logging.getLogger("crater_hub.gpus")

_started = {}  # event loop -> Future of the started Accounting
_pending = set()


def _hub_app():
    from jupyterhub.app import JupyterHub

    return JupyterHub.instance() if JupyterHub.initialized() else None


def hub_groups(app):
    """``user -> [group names]`` from the hub's in-memory users (a database lookup only for a
    user not loaded yet, as JupyterHub itself does)."""

    def groups_of(name):
        cached = next((u for u in dict.values(app.users) if u.name == name), None)
        found = cached or app.users.get(name)
        return [] if found is None else [g.name for g in found.groups]

    return groups_of


def schedule_start(c):
    """From ``setup(c)``: start accounting once the hub has started, when this is a hub's start."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    app = _hub_app()
    if app is None or getattr(app, "subapp", None) or not hasattr(app, "_start_future"):
        return None
    if loop in _started:
        return _started[loop]
    future = _started[loop] = loop.create_future()

    async def start_when_hub_started():
        try:
            await asyncio.shield(app._start_future)
            accounting = await _start(app)
        except Exception as e:
            log.exception("crater GPU accounting failed to start")
            future.set_exception(e)
            future.exception()
            _started.pop(loop, None)
            return
        future.set_result(accounting)

    task = loop.create_task(start_when_hub_started(), name="crater-gpu-accounting-start")
    _pending.add(task)
    task.add_done_callback(_pending.discard)
    return future


async def _start(app, crater=None):
    from ..config import Crater
    from ..db.session import Database
    from ..kube.inventory import shared_inventory
    from .accounting import Accounting
    from .devices import gpu_equivalent
    from .prometheus import shared_prometheus
    from .workloads import classify, device_requests

    crater = crater or Crater.shared(app.config)
    inventory = shared_inventory(crater.accelerator_catalog())
    namespace = crater.jobs_namespace or None
    accounting = Accounting(
        Database(crater.jobs_db_url or app.db_url), inventory.pod_cache, inventory.node_cache,
        accelerators=inventory.accelerators, groups_of=hub_groups(app),
        prometheus=shared_prometheus(crater), classify=classify, device_requests=device_requests,
        gpu_equivalent=gpu_equivalent, system_namespaces=(namespace,) if namespace else ())
    await accounting.start()
    return accounting


async def accounting_for(settings):
    """The started accounting of this loop, starting it now if the hub start did not."""
    loop = asyncio.get_running_loop()
    future = _started.get(loop)
    if future is None:
        app = _hub_app()
        if app is None:
            raise RuntimeError("crater GPU accounting runs inside JupyterHub only")
        future = _started[loop] = loop.create_future()
        try:
            future.set_result(await _start(app, settings.get("crater")))
        except Exception as e:
            _started.pop(loop, None)
            future.set_exception(e)
            raise
    return await asyncio.shield(future)
