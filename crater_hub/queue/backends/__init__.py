"""Admission engines behind one interface (:class:`~.base.QueueBackend`), and the one place a
backend is chosen: ``Crater.job_queue_backend_class`` (a traitlets ``Type``) if set, else the
class named by ``Crater.job_queue_backend`` (``"embedded"`` or ``"kueue"``)."""

from .base import QueueBackend
from .embedded import EmbeddedBackend
from .kueue import KueueBackend

BACKENDS = {cls.name: cls for cls in (EmbeddedBackend, KueueBackend)}


def backend_class(crater):
    """The backend class the configuration chooses."""
    return crater.job_queue_backend_class or BACKENDS[crater.job_queue_backend]


__all__ = ["BACKENDS", "EmbeddedBackend", "KueueBackend", "QueueBackend", "backend_class"]
