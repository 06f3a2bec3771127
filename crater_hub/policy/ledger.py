"""The quota ledger: what each user holds now, servers and jobs together, in one place.

One :class:`Ledger` per hub process (``Crater.ledger``), shared by the spawner and the queue.
Each holding is keyed by what holds it — ``("server", name)`` for a running or starting server,
``("job", id)`` for an admitted or running job, ``("ray", name)`` for a Ray cluster — so recording the same thing twice counts it
once, and whoever started a workload releases it when it ends.

Race-free by construction rather than by locks: :meth:`Ledger.reserve` checks the quota and
records the holding in one synchronous call, and every caller runs on the hub's event loop.
A spawn's check and the queue's commit of an admission therefore never interleave, whatever
order they come in: the second one sees the first. (The queue's admission cycle may decide on
a worker thread; it reserves here, on the loop, before it commits each admission.)

The ledger is pure bookkeeping; the rooms keep it true: the spawner on spawn, stop, a failed
start and each poll (which also restores servers that survived a hub restart), the queue on
every state change of a job (and for all active jobs when it starts).
"""

from dataclasses import dataclass, replace

from .quotas import Usage, violation

SERVER = "server"
JOB = "job"
#: a Ray cluster (crater_hub.ray): its workers' GPUs, keyed ("ray", cluster name)
RAY = "ray"


@dataclass(frozen=True, slots=True)
class Holding:
    """What one workload holds: ``accelerator`` (an Accelerator, or None) × ``gpus``.

    ``counted``: whether it counts against quota (best-effort jobs run beyond it by design)."""

    kind: str
    accelerator: object = None
    gpus: int = 0
    counted: bool = True

    @classmethod
    def of(cls, kind, spec, counted=True):
        """The holding of a resolved spec (anything with ``accelerator`` and ``gpus``)."""
        gpus = spec.gpus if spec.accelerator else 0
        return cls(kind, spec.accelerator if gpus else None, gpus, counted)


class Ledger:
    """Per-owner holdings (see the module docstring). Not thread-safe: call it on the loop."""

    def __init__(self):
        self._held = {}  # owner -> {key: Holding}

    def hold(self, owner, key, holding):
        """Record ``holding`` (replacing what ``key`` held), without a quota check."""
        self._held.setdefault(owner, {})[key] = holding

    def release(self, owner, key):
        """Forget what ``key`` holds; True when it held something."""
        held = self._held.get(owner)
        if not held or held.pop(key, None) is None:
            return False
        if not held:
            del self._held[owner]
        return True

    def holds(self, owner, key):
        return key in self._held.get(owner, ())

    def usage(self, owner, exclude=None, kinds=None):
        """What ``owner`` uses of their quota: servers (every server holding, ``servers``) and
        the GPUs of counted holdings (``gpus``, ``accelerators`` by slug)."""
        servers = gpus = 0
        by_type = {}
        for key, holding in self._held.get(owner, {}).items():
            if key == exclude or (kinds is not None and holding.kind not in kinds):
                continue
            if holding.kind == SERVER:
                servers += 1
            if holding.counted and holding.gpus:
                gpus += holding.gpus
                slug = holding.accelerator.slug
                by_type[slug] = by_type.get(slug, 0) + holding.gpus
        return Usage(servers, gpus, by_type)

    def reserve(self, owner, key, holding, quota):
        """Record ``holding`` if it fits ``quota`` next to everything else ``owner`` holds.

        Returns None when recorded, else why not (nothing is recorded). The ``servers`` limit
        applies to servers only."""
        if holding.counted and quota is not None:
            if holding.kind != SERVER and quota.servers is not None:
                quota = replace(quota, servers=None)
            why = violation(quota, self.usage(owner, exclude=key), holding)
            if why:
                return why
        self.hold(owner, key, holding)
        return None

    def owners(self):
        return list(self._held)

