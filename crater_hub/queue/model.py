"""The admission engine's data: what a queued or active job, a node's free capacity and a
cycle's decision look like to :mod:`crater_hub.queue.engine` (plain values, no I/O)."""

import threading
from dataclasses import dataclass, field

from . import collector

CPU_POOL = "cpu"
BEST_EFFORT_FIFO = "best_effort_fifo"
STRICT_FIFO = "strict_fifo"
STRATEGIES = (BEST_EFFORT_FIFO, STRICT_FIFO)


@dataclass(frozen=True, slots=True)
class QueuedJob:
    id: int
    owner: str
    priority: int = 0
    best_effort: bool = False
    accelerator: str | None = None  # slug; None: a CPU-only job
    gpus: int = 0
    cpu_m: int = 0  # requested millicores
    mem_b: int = 0  # requested bytes
    submitted: float = 0.0  # seconds (epoch or any clock shared with ``now``)
    runtime: float = 3600.0  # declared or maximum run time, seconds
    #: derived: the pool it competes in (accelerator slug, or "cpu") and what it takes from it
    #: (GPUs, or millicores for CPU-only jobs); plain attributes, read 10^5 times per cycle
    pool: str = field(init=False, repr=False, compare=False)
    units: int = field(init=False, repr=False, compare=False)
    #: derived: "pool gpus cpu_m mem_b", the engine's key for "found no node this cycle"
    #: (a string: its hash is computed once, a tuple's on every lookup)
    need: str = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        pool = self.accelerator if self.accelerator and self.gpus else CPU_POOL
        object.__setattr__(self, "pool", pool)
        object.__setattr__(self, "units", self.gpus if pool != CPU_POOL else self.cpu_m)
        object.__setattr__(self, "need", f"{pool} {self.gpus} {self.cpu_m} {self.mem_b}")


@dataclass(frozen=True, slots=True)
class ActiveJob(QueuedJob):
    node: str | None = None  # where its pod is bound; None while not yet placed
    started: float | None = None  # admitted or started time


@dataclass
class NodeFree:
    """What a Ready, schedulable node has free now (``terminating``: held by pods of jobs that
    were already preempted or cancelled, free once they are gone)."""

    name: str
    accelerators: dict = field(default_factory=dict)  # slug -> free devices
    cpu_m: int = 0
    mem_b: int = 0
    terminating: dict = field(default_factory=dict)  # slug -> devices being released



class Decision:
    """One cycle's outcome: ``admit`` [(job id, node name)], ``preempt`` [(victim id, for id)],
    and per still-queued job its 1-based ``positions`` in its pool, ``estimated_start`` (seconds
    or None) and why it is ``waiting``.

    Positions and estimates cost more than the admissions themselves (a replay of the whole
    queue), and only matter when someone reads a queued job; so does wording why each of 10^5
    jobs waits (a cycle needs only ``admit`` and ``preempt``): :func:`crater_hub.queue.engine.schedule`
    leaves them ``pending``, and the first read of ``positions``, ``estimated_start`` or
    ``waiting`` computes them (:meth:`complete`, thread-safe: the service completes a large
    one on a worker thread before it reads)."""

    __slots__ = ("admit", "preempt", "_positions", "_estimated", "_waiting", "_pending", "_lock")

    def __init__(self, admit=None, preempt=None, positions=None, estimated_start=None,
                 waiting=None):
        self.admit = admit if admit is not None else []
        self.preempt = preempt if preempt is not None else []
        self._positions = positions if positions is not None else {}
        self._estimated = estimated_start if estimated_start is not None else {}
        self._waiting = waiting if waiting is not None else {}
        self._pending = None
        self._lock = threading.Lock()

    def defer(self, compute):
        """Leave the positions and estimates to ``compute(outcome)``, run on first read;
        ``outcome`` has this decision's ``positions``, ``estimated_start`` and ``waiting``."""
        self._pending = compute

    @property
    def pending(self):
        return self._pending is not None

    def complete(self):
        """Compute the deferred positions and estimates now (once; a reader on another thread
        meanwhile waits for them)."""
        if self._pending is None:
            return self
        with self._lock, collector.paused():  # see .collector
            if self._pending is not None:
                self._pending(_Outcome(self._positions, self._estimated, self._waiting))
                self._pending = None
        return self

    @property
    def positions(self):  # job id -> 1-based position in its pool
        return self.complete()._positions

    @property
    def estimated_start(self):  # job id -> seconds or None
        return self.complete()._estimated

    @property
    def waiting(self):  # job id -> why it is still queued
        return self.complete()._waiting



@dataclass
class _Outcome:
    positions: dict
    estimated_start: dict
    waiting: dict
