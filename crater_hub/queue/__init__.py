"""The batch job queue: records in the database, admission (embedded engine or Kueue), dispatch
to batch/v1 Jobs and reconciliation from the shared watch caches.

Modules: ``settings`` (operator config), ``spec`` (a submission → a frozen :class:`JobSpec`),
``engine`` (pure admission: priority, fair share, FIFO, quota, capacity, preemption, positions
and estimated start), ``manifest`` (the Job object), ``service`` (the hub-side loop),
``starter`` (how the service starts with the hub), ``faults`` (crash-test hooks).
"""
