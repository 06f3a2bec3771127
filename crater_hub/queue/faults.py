"""Crash-test hooks: ``CRATER_FAULT_POINT=name:count`` kills the hub (``os._exit(137)``, as a
SIGKILL would) the ``count``-th time execution reaches ``point(name)``; several may be given,
separated by commas. Unset (always, outside the crash tests) a point costs one dict lookup.

The points, in the order a job meets them (see :data:`POINTS`), are where a crash could leave a
record and the cluster disagreeing; tests/queue/test_crash.py kills the hub at each and checks
that, after a restart, every job ends correctly, none lost and none run twice.
"""

import os
import sys

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

_remaining = {}


def _parse(value):
    out = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, count = item.partition(":")
        if name not in POINTS:
            raise ValueError(f"CRATER_FAULT_POINT: unknown point {name!r}; known: {', '.join(POINTS)}")
        out[name] = int(count or 1)
    return out


_remaining.update(_parse(os.environ.get("CRATER_FAULT_POINT", "")))


def point(name):
    """Die here if a fault is armed for ``name`` and this is its ``count``-th arrival."""
    if not _remaining:
        return
    left = _remaining.get(name)
    if left is None:
        return
    if left > 1:
        _remaining[name] = left - 1
        return
    sys.stderr.write(f"crater fault point {name}: exiting with 137\n")
    sys.stderr.flush()
    os._exit(137)
