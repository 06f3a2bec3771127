"""The contract between the queue's loop and an admission engine.

A backend decides which queued jobs run and says why the others wait; everything else — the
records, the reconcile of each job against the caches, dispatch, logs, cleanup — is the same
for every backend and lives in :mod:`crater_hub.queue.service` and its parts. Two ship:
``embedded`` (:class:`~crater_hub.queue.backends.embedded.EmbeddedBackend`, the hub admits) and
``kueue`` (:class:`~crater_hub.queue.backends.kueue.KueueBackend`, Kueue admits). An operator
plugs another (Volcano, say) with ``Crater.job_queue_backend_class``, a traitlets ``Type``.
"""

from traitlets.config import LoggingConfigurable


class QueueBackend(LoggingConfigurable):
    """An admission engine for :class:`~crater_hub.queue.service.QueueService`.

    Subclasses implement :meth:`cycle` and may override the rest. ``service``: the queue the
    backend works for (its ``store``, ``reconciler``, ``inventory``, caches, ``crater``).
    """

    #: the name ``Crater.job_queue_backend`` gives this backend (shown in the admins' queue view)
    name = ""
    #: whether queued records already have a (suspended) Kubernetes Job the loop must follow
    queued_jobs_have_jobs = False
    #: whether Jobs are created suspended (the engine unsuspends them when it admits)
    suspend_jobs = False

    def __init__(self, service, **kwargs):
        super().__init__(**kwargs)
        self.service = service

    async def start(self):
        """Start what the backend watches; return once its caches have loaded."""

    async def stop(self):
        """Stop what :meth:`start` started (listeners, tasks)."""

    def queue_name(self):
        """The queue name a new record gets."""
        return "default"

    def job_labels(self, job):
        """Extra labels of the Kubernetes Job of ``job`` (e.g. the queue that admits it)."""
        return {}

    def describe(self):
        """How the backend orders jobs, for the start-up log line."""
        return self.name

    async def follow(self, job, name, k8s):
        """Move ``job`` as the engine says, given its Kubernetes Job ``k8s`` (named ``name``).

        Returns whether the usual following of the Job and its pod applies (False while the job
        is still the engine's to admit, or was just evicted). Called under the job's lock."""
        return True

    async def cycle(self):
        """One admission cycle, after every record was reconciled: admit (and preempt) what the
        engine decides, and set ``service.decision`` (positions, estimates, reasons)."""
        raise NotImplementedError
