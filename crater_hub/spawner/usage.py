"""What a user's servers hold now, and the per-user lock that makes quota checks race-free.

A spawn's resolved :class:`~crater_hub.policy.workload.WorkloadSpec` is kept on its spawner (``crater_spec``) from the
moment it passes the quota check, inside the user's lock: a concurrent spawn of the same user,
checked next, already counts it. Servers started before a hub restart have no spec in memory;
theirs is re-derived from their stored ``user_options``.
"""

import asyncio
import weakref

from ..policy import workload

_locks = weakref.WeakValueDictionary()


def user_lock(user_name):
    """One asyncio.Lock per user name, alive while anyone holds or waits on it."""
    lock = _locks.get(user_name)
    if lock is None:
        lock = _locks[user_name] = asyncio.Lock()
    return lock


def spec_of(spawner, profiles, catalog):
    """The spec a (running or starting) spawner holds; zero GPUs when it cannot be derived."""
    spec = getattr(spawner, "crater_spec", None)
    if spec is not None:
        return spec
    user = spawner.user
    try:
        return workload.resolve(spawner.user_options or {}, profiles, user.name,
                               [g.name for g in user.groups], catalog)
    except workload.PolicyError:
        return workload.WorkloadSpec(profile=(spawner.user_options or {}).get("profile", "unknown"))


def holds_resources(spawner):
    """Whether the server counts against quota: it passed our check, or it is running.

    A spawn still waiting for the check (pending, no ``crater_spec`` yet) does not count: its
    own check, under the same lock, comes next. Counting it from its raw ``user_options``, as
    JupyterHub 5 shows them while it is pending, would let two concurrent spawns refuse each
    other.
    """
    return getattr(spawner, "crater_spec", None) is not None or spawner.ready


def active_specs(user, profiles, catalog, exclude=None):
    """Specs of the user's servers that count against quota, except ``exclude``."""
    return [spec_of(s, profiles, catalog) for s in user.spawners.values()
            if s is not exclude and holds_resources(s)]
