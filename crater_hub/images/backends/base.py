"""The commit engine's contract: turn a running container into an image in the registry.

A backend is chosen by ``CraterImages.commit_backend_class`` (a traitlets ``Type``, as
dask-gateway picks its cluster backend) and built with the hub's settings as parent, so it reads
its own options from config. The service hands it a :class:`CommitRequest` and a
:class:`Reporter`; it returns a :class:`CommitResult` or raises :class:`CommitFailed` with a
reason a user can act on. It never writes the library: the service does, only on success.
"""

from dataclasses import dataclass, field

from traitlets.config import LoggingConfigurable

#: reasons of a failed commit (``CommitFailed.reason``), as the API reports them
REASONS = ("server_stopped", "too_large", "registry_refused", "timed_out", "runtime_error", "hub_restarted")


class CommitFailed(Exception):
    def __init__(self, reason, message):
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass(frozen=True)
class CommitRequest:
    pod: dict  # the server's pod as the API shows it (status.containerStatuses included)
    container: str  # the container to commit (KubeSpawner's "notebook")
    repository: str  # path in the registry: <prefix>/<user>/<name>
    tag: str
    max_bytes: int | None  # None: no cap (admins)
    labels: dict = field(default_factory=dict)  # added to the image config's Labels


@dataclass(frozen=True)
class CommitResult:
    digest: str  # the pushed manifest's digest
    size: int  # compressed bytes of every layer and the config
    layer_size: int  # compressed bytes of the new layer
    base: str  # the image-table or registry reference the image grows from


class Reporter:
    """Where a backend says how far it is: ``phase`` ("committing" or "pushing"), a progress
    fraction of that phase, and log lines. The service turns them into the commit's record."""

    async def phase(self, phase):
        raise NotImplementedError

    def progress(self, fraction):
        raise NotImplementedError

    def log(self, line):
        raise NotImplementedError


class CommitBackend(LoggingConfigurable):
    """Subclasses implement :meth:`commit`; the settings (registry, credentials) are passed in."""

    def __init__(self, settings, **kwargs):
        super().__init__(**kwargs)
        self.settings = settings

    async def commit(self, request, reporter):
        """Commit ``request.container`` of ``request.pod`` and push it as
        ``<registry>/<request.repository>:<request.tag>``; return a :class:`CommitResult`.
        Raise :class:`CommitFailed` (reason in :data:`REASONS`) when it cannot."""
        raise NotImplementedError


def human_size(n):
    """``26214507`` → ``25.0 MiB``: sizes in messages people read."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def container_id(pod, container):
    """The runtime's ID of ``container`` from ``pod.status.containerStatuses`` (``containerd://``
    stripped), never found by name matching on the node; None when it is not running."""
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") == container and "running" in (status.get("state") or {}):
            raw = status.get("containerID") or ""
            return raw.split("://", 1)[-1] or None
    return None
