"""Crash-test fault injection, outside the product: ``CRATER_FAULT_POINT=name:count`` kills the
hub (``os._exit(137)``, as a SIGKILL would) the ``count``-th time execution reaches ``name``;
several may be given, separated by commas.

The hub of a crash test runs with ``Crater.job_queue_backend_class`` set to
:class:`FaultyEmbeddedBackend` (or :class:`FaultyKueueBackend`): a backend that, when the queue
makes it, wraps the methods of the queue's parts (store, reconciler, service) where each point
sits — before or after a database write or a Kubernetes call. The points, in the order a job
meets them (:data:`POINTS`), are where a crash could leave a record and the cluster disagreeing;
test_crash.py kills the hub at each and checks that, after a restart, every job ends correctly,
none lost and none run twice.
"""

import functools
import os
import sys

from crater_hub.queue.backends import EmbeddedBackend, KueueBackend

POINTS = (
    "submit.before_insert",      # the request arrived; nothing written
    "submit.after_insert",       # the record is committed; the client got no answer
    "admit.before_commit",       # the engine chose it; not yet written
    "admit.after_commit",        # admitted in the database; no Kubernetes Job yet
    "dispatch.before_create",    # about to create the Job
    "dispatch.after_create",     # the Job exists; the record does not say so yet
    "dispatch.after_commit",     # the record says dispatched
    "running.before_commit",     # its pod runs; the record says admitted
    "running.after_commit",      # the record says running
    "finish.before_logs",        # the Job ended; its logs not saved yet
    "finish.after_logs",         # the log tail is saved; the final state is not
    "finish.after_commit",       # final state saved; the Job not deleted yet
    "cleanup.after_delete",      # the Job deleted; the record does not say so yet
    "cancel.before_commit",      # a cancel request arrived; nothing written
    "cancel.after_commit",       # cancelled in the database; the Job still there
    "preempt.after_commit",      # preempted in the database; the Job still there
    "requeue.before_commit",     # a preempted job's Job is gone; not queued again yet
    "requeue.after_commit",      # queued again as a new attempt
    "startup.after_migrate",     # the hub restarted: tables ready, nothing reconciled
    "startup.after_reconcile",   # the first reconcile pass after a restart is done
)

#: a state change (the target state) -> (point before the write, point after it)
TRANSITIONS = {
    "admitted": ("admit.before_commit", "admit.after_commit"),
    "running": ("running.before_commit", "running.after_commit"),
    "succeeded": ("finish.after_logs", "finish.after_commit"),
    "failed": ("finish.after_logs", "finish.after_commit"),
    "cancelled": ("cancel.before_commit", "cancel.after_commit"),
    "preempted": (None, "preempt.after_commit"),
    "queued": ("requeue.before_commit", "requeue.after_commit"),  # only a requeue goes back
}


def _parse(value):
    out = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, count = item.partition(":")
        if name not in POINTS:
            raise ValueError(f"CRATER_FAULT_POINT: unknown point {name!r}; known: {', '.join(POINTS)}")
        out[name] = int(count or 1)
    return out


_remaining = _parse(os.environ.get("CRATER_FAULT_POINT", ""))


def point(name):
    """Die here if a fault is armed for ``name`` and this is its ``count``-th arrival."""
    if name is None or name not in _remaining:
        return
    left = _remaining[name]
    if left > 1:
        _remaining[name] = left - 1
        return
    sys.stderr.write(f"crater fault point {name}: exiting with 137\n")
    sys.stderr.flush()
    os._exit(137)


def _around(obj, attr, before=None, after=None):
    """Wrap the async method ``obj.attr``: ``before(*args, **kwargs)`` names the point to pass
    before it, ``after(result, *args, **kwargs)`` the one after it (None: no point)."""
    original = getattr(obj, attr)

    @functools.wraps(original)
    async def wrapped(*args, **kwargs):
        if before is not None:
            point(before(*args, **kwargs))
        result = await original(*args, **kwargs)
        if after is not None:
            point(after(result, *args, **kwargs))
        return result

    setattr(obj, attr, wrapped)


def arm(service):
    """Put the fault points around the methods of ``service``'s parts."""
    store, reconciler = service.store, service.reconciler
    load = store.load

    def load_after_migrate(session):  # runs once the migrations are done (database thread)
        point("startup.after_migrate")
        return load(session)

    store.load = load_after_migrate
    _around(store, "transition",
            before=lambda job, state, *a, **k: TRANSITIONS.get(state, (None, None))[0],
            after=lambda ok, job, state, *a, **k: TRANSITIONS.get(state, (None, None))[1] if ok
            else None)
    _around(store, "update", after=lambda _, job, **values:
            "dispatch.after_commit" if values.get("dispatched") else None)
    _around(store, "insert", after=lambda *_: "submit.after_insert")
    _around(service, "submit", before=lambda *_: "submit.before_insert")
    _around(reconciler, "finish", before=lambda *a, **k: "finish.before_logs")
    _around(reconciler, "create_job", before=lambda *_: "dispatch.before_create",
            after=lambda *_: "dispatch.after_create")
    _around(reconciler, "delete_job", after=lambda *_: "cleanup.after_delete")
    first = [True]

    def after_first_pass(*_):
        if first[0]:
            first[0] = False
            return "startup.after_reconcile"
        return None

    _around(reconciler, "reconcile_all", after=after_first_pass)


class FaultyEmbeddedBackend(EmbeddedBackend):
    """The embedded backend, with the crash tests' fault points armed around the queue."""

    def __init__(self, service, **kwargs):
        super().__init__(service, **kwargs)
        arm(service)


class FaultyKueueBackend(KueueBackend):
    """The kueue backend, with the crash tests' fault points armed around the queue."""

    def __init__(self, service, **kwargs):
        super().__init__(service, **kwargs)
        arm(service)
