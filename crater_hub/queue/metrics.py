"""The queue's series on ``/hub/metrics`` (prometheus_client's default registry, which
JupyterHub serves): jobs by state, queue length, how long jobs waited to be admitted, and how
long an admission cycle takes.

Counts are read from the running queues' in-memory records when Prometheus scrapes (one pass,
no database query); waits and cycle times are observed as they happen.
"""

import time
import weakref
from collections import Counter
from contextlib import contextmanager

from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import GaugeMetricFamily

from .store import STATES

WAIT = Histogram(
    "crater_job_wait_seconds", "Seconds a job waited in the queue before it was admitted.",
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 7 * 24 * 3600))
CYCLE = Histogram(
    "crater_queue_cycle_seconds", "Seconds one admission cycle of the job queue took.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

_services = weakref.WeakSet()


class _QueueCollector:
    """Jobs by state and the queue's length, from the records of every running queue."""

    def collect(self):
        counts = Counter()
        for service in list(_services):
            counts.update(job.state for job in list(service.store.jobs.values()))
        jobs = GaugeMetricFamily(
            "crater_jobs", "Jobs the queue holds in memory (unfinished, or finished and not yet "
            "cleaned up), by state.", labels=["state"])
        for state in STATES:
            jobs.add_metric([state], counts.get(state, 0))
        yield jobs
        yield GaugeMetricFamily("crater_queue_length", "Jobs waiting in the queue.",
                                value=counts.get("queued", 0))

    def describe(self):
        return []  # collected at scrape time only


REGISTRY.register(_QueueCollector())


def _on_change(job, old_state):
    if old_state == "queued" and job.state == "admitted" and job.submitted and job.admitted:
        WAIT.observe(max(0.0, (job.admitted - job.submitted).total_seconds()))


def watch(service):
    """Count ``service``'s records and observe their waits."""
    _services.add(service)
    if _on_change not in service.store.listeners:
        service.store.listeners.append(_on_change)


def unwatch(service):
    _services.discard(service)
    if _on_change in service.store.listeners:
        service.store.listeners.remove(_on_change)


@contextmanager
def cycle_timer():
    start = time.perf_counter()
    try:
        yield
    finally:
        CYCLE.observe(time.perf_counter() - start)
