"""The batch job queue: records in the database, admission (embedded engine or Kueue), dispatch
to batch/v1 Jobs and reconciliation from the shared watch caches.

Modules: ``spec`` (a submission → a frozen :class:`JobSpec`), ``engine`` and ``estimates``
(pure admission: priority, fair share, FIFO, quota, capacity, preemption; positions and
estimated start), ``manifest`` (the Job object), ``store`` (records and their writes),
``reconciler`` (one job against the caches), ``backends`` (admission engines behind one
interface), ``logs``, ``views``, ``metrics``, ``service`` (the loop that puts them together),
``starter`` (how the service starts with the hub). Crash-test fault injection lives in the
tests (``tests/queue/faults.py``), wrapped around these parts' methods.
"""
