"""The reconcile-loop base every localkube controller is built on.

A controller declares which storage keys it cares about; every committed change of those kinds
puts an object key into a de-duplicating work queue; one worker task calls :meth:`reconcile` for
each key, never for the same key twice at once. ``reconcile`` may return a number of seconds to be
called again after (timers: back-off, deadlines, TTLs). Exceptions are logged and retried with
back-off, so a bug in one object never stops the loop.
"""

import asyncio
import logging

log = logging.getLogger("localkube")


class Controller:
    """Subclasses set ``watches`` (storage keys) and implement ``reconcile(key)``."""

    #: storage keys (group, plural) whose changes trigger reconciles
    watches = ()

    def __init__(self, cluster):
        self.cluster = cluster
        self.store = cluster.store
        self.registry = cluster.registry
        self._queue = asyncio.Queue()
        self._pending = set()
        self._timers = {}
        self._task = None
        self._failures = {}
        self.store.listen(self._on_change)

    def res(self, group, plural, version="v1"):
        return self.registry.lookup(group, version, plural)

    def keys_for(self, change):
        """Which work keys a change enqueues. Default: the changed object itself."""
        if change.skey in self.watches:
            meta = change.obj["metadata"]
            return [(change.skey, meta.get("namespace"), meta["name"])]
        return []

    def _on_change(self, change):
        for key in self.keys_for(change):
            self.enqueue(key)

    def enqueue(self, key, after=None):
        if after:
            timer = self._timers.pop(key, None)
            if timer:
                timer.cancel()
            loop = asyncio.get_running_loop()
            self._timers[key] = loop.call_later(after, self.enqueue, key)
            return
        if key not in self._pending:
            self._pending.add(key)
            self._queue.put_nowait(key)

    def start(self):
        self._task = asyncio.create_task(self._run(), name=type(self).__name__)

    async def stop(self):
        for timer in self._timers.values():
            timer.cancel()
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self):
        while True:
            key = await self._queue.get()
            self._pending.discard(key)
            try:
                again = await self.reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                n = self._failures.get(key, 0) + 1
                self._failures[key] = n
                log.exception("%s: reconcile of %s failed (attempt %d)", type(self).__name__, key, n)
                self.enqueue(key, after=min(0.1 * 2**n, 10))
                continue
            self._failures.pop(key, None)
            if again:
                self.enqueue(key, after=again)

    async def reconcile(self, key):
        """Bring the object named by ``key`` = (skey, namespace, name) to its desired state."""
        raise NotImplementedError
