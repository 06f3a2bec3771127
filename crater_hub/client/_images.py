"""Images from a notebook: the library (``images()``) and saving the server it runs in
(``commit(...)``), through ``/hub/api/crater/images``."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, fields

from ._http import CraterError, CraterTimeout

COMMIT_FINAL = frozenset({"succeeded", "failed"})


@dataclass
class Image:
    id: str
    image: str
    name: str | None = None
    tag: str | None = None
    kind: str | None = None
    owner: str | None = None
    digest: str | None = None
    size: int | None = None
    description: str = ""
    source: dict = field(default_factory=dict)
    created: str | None = None
    shared_with: dict = field(default_factory=dict)
    public: bool = False

    @classmethod
    def from_api(cls, data):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Commit:
    id: str
    state: str
    image: str | None = None
    server: str | None = None
    progress: float = 0.0
    reason: str | None = None
    message: str | None = None
    digest: str | None = None
    size: int | None = None
    image_id: str | None = None

    @classmethod
    def from_api(cls, data):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class ImagesAPI:
    """Mixed into :class:`~crater_hub.client.Client` (``self.http`` is its connection)."""

    def images(self, scope="all"):
        """The images you may start from: ``all``, ``mine``, ``shared``, ``public`` or ``admin``."""
        data = self.http.request("GET", "crater/images", [("scope", scope)])
        return [Image.from_api(i) for i in data["images"]]

    def commit(self, name, tag="latest", *, server=None, description="", wait=False, timeout=None):
        """Save a running server (by default the one this runs in) as ``<name>:<tag>``.

        Only the server's own filesystem is saved, not the home directory nor dataset mounts.
        ``wait=True`` returns once the commit has ended and raises :class:`CraterError` if it
        failed (with the hub's reason); ``timeout`` seconds bound the wait.
        """
        if server is None:
            server = os.environ.get("JUPYTERHUB_SERVER_NAME", "")
        body = {"server": server, "name": name, "tag": tag, "description": description}
        commit = Commit.from_api(self.http.request("POST", "crater/images/commits", body=body))
        if not wait:
            return commit
        commit = self.wait_commit(commit.id, timeout=timeout)
        if commit.state == "failed":
            raise CraterError(f"commit {commit.id} failed ({commit.reason}): {commit.message}")
        return commit

    def get_commit(self, commit_id):
        return Commit.from_api(self.http.request("GET", f"crater/images/commits/{commit_id}"))

    def wait_commit(self, commit_id, timeout=None):
        """The commit once it has ended (the hub answers each poll when it changes)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 20.0 if deadline is None else max(0.0, min(20.0, deadline - time.monotonic()))
            commit = Commit.from_api(self.http.request(
                "GET", f"crater/images/commits/{commit_id}", [("wait", f"{left:.1f}")]))
            if commit.state in COMMIT_FINAL:
                return commit
            if deadline is not None and time.monotonic() >= deadline:
                raise CraterTimeout(f"commit {commit_id} is still {commit.state} after {timeout}s", commit)

    def commit_logs(self, commit_id):
        return self.http.request("GET", f"crater/images/commits/{commit_id}/logs")["log"]
