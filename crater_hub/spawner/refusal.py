"""A refused spawn, cleanly: one log line, the user's message, and no server left behind.

:func:`refusal` makes the exception JupyterHub treats as a policy refusal (``SpawnException``
on JupyterHub ≥ 6, logged as one line without a traceback; an ``HTTPError`` on 5.x).

:func:`forget_if_created_for` removes the record of a named server that a refused spawn created:
``POST /hub/api/users/:name/servers/:server`` (and the spawn page of a new named server) creates
the server's database record before it spawns, and JupyterHub keeps a record whose spawn failed
(it shows as a stopped server in the admin page). Once JupyterHub has finished with the failed
spawn (its spawn future is done), the record is deleted as ``DELETE ...?remove=true`` would.
A server that existed before the refused spawn is left alone.

:class:`OneLineRefusals` keeps a refusal one line in the hub's log where JupyterHub logs it with
its traceback (the spawn form's handler logs every failed spawn with ``exc_info``): a refusal is
the user's doing, not the hub's, and its message says all there is to say.
"""

import asyncio
import logging

from prometheus_client import Counter
from tornado import web

try:  # JupyterHub ≥ 6: a policy refusal with a reason label and a status code
    from jupyterhub.spawner import SpawnException
except ImportError:  # JupyterHub 5.x
    SpawnException = None

log = logging.getLogger("crater_hub.spawner")
#: on the hub's /hub/metrics (prometheus_client's default registry, as JupyterHub's own metrics)
REFUSALS = Counter("crater_spawn_refusals_total", "Spawns crater_hub refused, by reason",
                   ["reason"])
_pending = set()  # strong references to scheduled removals


def refusal(error):
    """The exception JupyterHub turns into a clean, user-facing spawn failure.

    ``jupyterhub_message`` is what the spawn page shows; without it the page shows ``str(exc)``,
    which for a SpawnException reads "403 SpawnException(reason=quota): ...".
    """
    REFUSALS.labels(reason=error.reason or "other").inc()
    if SpawnException is not None:
        exc = SpawnException(error.message, reason=error.reason, status_code=error.status)
    else:
        exc = web.HTTPError(error.status, error.message)
    exc.jupyterhub_message = error.message
    exc.crater_refusal = True
    return exc


class OneLineRefusals(logging.Filter):
    """Drop the traceback of a record whose exception is a crater refusal, keeping its message."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        if getattr(exc, "crater_refusal", False):
            record.msg = f"{record.getMessage()}: {getattr(exc, 'jupyterhub_message', exc)}"
            record.args = ()
            record.exc_info = record.exc_text = None
        return True


def keep_refusals_one_line(logger):
    """Install :class:`OneLineRefusals` on ``logger`` (the hub's), once."""
    if not any(isinstance(f, OneLineRefusals) for f in logger.filters):
        logger.addFilter(OneLineRefusals())


def never_started(spawner):
    """Whether ``spawner``'s record has never been spawned: it was created for this spawn."""
    orm = getattr(spawner, "orm_spawner", None)
    return orm is not None and orm.started is None and orm.last_activity is None


def forget_if_created_for(spawner):
    """Remove ``spawner``'s named server once its refused spawn is over, if it was created for it."""
    future = getattr(spawner, "_spawn_future", None)
    if not spawner.name or not getattr(spawner, "crater_created_for_spawn", False) or future is None:
        return

    def when_done(_):
        task = asyncio.ensure_future(_forget(spawner))
        _pending.add(task)
        task.add_done_callback(_pending.discard)

    future.add_done_callback(when_done)


async def _forget(spawner):
    user = spawner.user
    if spawner.active or user.spawners.get(spawner.name) is not spawner:
        return  # started again meanwhile, or already replaced or removed
    try:
        # private: JupyterHub's User has no public way to drop a named server's record from
        # inside the hub (the REST DELETE needs a request); _delete_spawner is what it uses
        await user._delete_spawner(spawner)
        user.db.delete(spawner.orm_spawner)
        user.spawners.pop(spawner.name, None)
        user.db.commit()
    except Exception:
        user.db.rollback()
        log.exception("could not remove %s's refused server %r", user.name, spawner.name)
        return
    log.info("removed %s's server %r: its first spawn was refused", user.name, spawner.name)
