"""Batch jobs from a notebook: the :class:`Job` record and the :class:`Client` that submits,
lists, waits for, reads and cancels them through ``/hub/api/crater/jobs``."""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone

from ._http import Connection, CraterError, CraterTimeout
from ._images import ImagesAPI

STATES = ("queued", "admitted", "running", "succeeded", "failed", "cancelled", "preempted")
# A preempted job stays preempted unless the hub requeues it (then it is queued again).
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "preempted"})
TIMES = ("estimated_start", "submitted", "admitted", "started", "finished")


def _time(value):
    """An ISO 8601 string from the API as an aware UTC datetime (``None`` stays ``None``)."""
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass
class Transition:
    state: str
    reason: str | None
    at: datetime | None


@dataclass
class Job:
    """A batch job as the hub last reported it. ``refresh()``, ``wait()``, ``logs()`` and
    ``cancel()`` call the hub through the client that returned it."""

    id: int
    state: str
    name: str | None = None
    owner: str | None = None
    profile: str | None = None
    accelerator: str | None = None
    gpus: int = 0
    cpu: object = None
    memory: object = None
    image: str | None = None
    command: list = field(default_factory=builtins.list)
    env: dict = field(default_factory=dict)
    priority: str | None = None
    queue: str | None = None
    reason: str | None = None
    exit_code: int | None = None
    position: int | None = None
    estimated_start: datetime | None = None
    submitted: datetime | None = None
    admitted: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = None
    k8s_job: str | None = None
    transitions: list = field(default_factory=builtins.list)
    extra: dict = field(default_factory=dict, repr=False)  # fields newer hubs add
    _client: Client | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_model(cls, model, client=None):
        known = {f.name for f in fields(cls)} - {"extra", "_client"}
        values = {k: v for k, v in model.items() if k in known}
        for name in TIMES:
            values[name] = _time(values.get(name))
        values["transitions"] = [
            Transition(t.get("state"), t.get("reason"), _time(t.get("at")))
            for t in model.get("transitions") or ()
        ]
        values["command"] = builtins.list(values.get("command") or ())
        values["env"] = dict(values.get("env") or {})
        extra = {k: v for k, v in model.items() if k not in known}
        return cls(**values, extra=extra, _client=client)

    @property
    def done(self):
        """Whether the job has ended (succeeded, failed, cancelled or preempted)."""
        return self.state in FINAL_STATES

    @property
    def duration(self):
        """Seconds it ran (so far, while running); ``None`` before it starts."""
        if self.started is None:
            return None
        end = self.finished or datetime.now(timezone.utc)
        return (end - self.started).total_seconds()

    def _bound(self):
        if self._client is None:
            raise CraterError("this Job is not bound to a client; use crater_hub.client functions")
        return self._client

    def refresh(self):
        return self._bound().get(self.id)

    def wait(self, timeout=None, poll=2.0):
        return self._bound().wait(self.id, timeout=timeout, poll=poll)

    def logs(self, tail=None, follow=False):
        return self._bound().logs(self.id, tail=tail, follow=follow)

    def events(self):
        return self._bound().events(self.id)

    def cancel(self):
        return self._bound().cancel(self.id)


class Client(ImagesAPI):
    """The jobs API of one hub as one user.

    By default authenticated as the single-user server this runs in (``JUPYTERHUB_API_URL``,
    ``JUPYTERHUB_API_TOKEN``); pass ``api_url`` (``https://hub.example.org/hub/api``) and a
    ``token`` from the hub's Token page to use it from elsewhere.
    """

    def __init__(self, api_url=None, token=None, timeout=30.0):
        self.http = Connection(api_url, token, timeout)

    def __repr__(self):
        return f"Client({self.http.api_url!r})"

    def submit(self, command, *, profile=None, accelerator=None, gpus=0, image=None, env=None,
               priority=None, name=None, max_runtime=None, workdir=None) -> Job:
        """Queue ``command`` (a list of arguments, or a string run by a shell) and return the job.

        ``profile`` is one of those :meth:`profiles` lists; ``accelerator`` and ``gpus`` choose
        among its accelerators and counts; ``max_runtime`` is in seconds. The job runs in your
        home, as your default server sees it, unless ``workdir`` (an absolute path) names
        another directory.
        """
        if isinstance(command, str):
            body = {"command": command}
        elif isinstance(command, Sequence):
            body = {"command": [str(arg) for arg in command]}
        else:
            raise TypeError("command must be a list of arguments or a string")
        if env is not None and not isinstance(env, Mapping):
            raise TypeError("env must be a mapping of variable names to strings")
        optional = {"profile": profile, "accelerator": accelerator, "image": image,
                    "priority": priority, "name": name, "max_runtime": max_runtime,
                    "workdir": workdir,
                    "env": {str(k): str(v) for k, v in env.items()} if env else None}
        body.update({k: v for k, v in optional.items() if v is not None})
        body["gpus"] = int(gpus or 0)
        return self._job(self.http.request("POST", "crater/jobs", body=body))

    def list(self, state=None, all=False) -> list[Job]:  # noqa: A002 (the API's own names)
        """Your jobs, newest first; ``state`` is one state or several; ``all`` (administrators):
        every user's."""
        states = [state] if isinstance(state, str) else builtins.list(state or ())
        query = [("state", s) for s in states] + ([("all", "1")] if all else [])
        model = self.http.request("GET", "crater/jobs", query=query)
        return [self._job(m) for m in model["jobs"]]

    def get(self, id) -> Job:  # noqa: A002
        return self._job(self.http.request("GET", f"crater/jobs/{int(id)}"))

    def cancel(self, id) -> Job:  # noqa: A002
        """Cancel a queued or running job; cancelling a finished one raises (409)."""
        return self._job(self.http.request("DELETE", f"crater/jobs/{int(id)}"))

    def wait(self, id, timeout=None, poll=2.0) -> Job:  # noqa: A002
        """Poll until the job ends and return it as it ended; :class:`CraterTimeout` (carrying
        the job as last seen) after ``timeout`` seconds.

        ``preempted`` counts as an end, as in the hub; where the hub requeues preempted jobs,
        the job is ``queued`` again shortly after: wait again to follow its next attempt.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(id)
            if job.done:
                return job
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CraterTimeout(
                        f"job {job.id} is still {job.state} after {timeout:g}s", job=job)
                time.sleep(min(poll, left))
            else:
                time.sleep(poll)

    def logs(self, id, tail=None, follow=False) -> str | Iterator[str]:  # noqa: A002
        """The job's output (the last ``tail`` lines); with ``follow``, an iterator over its
        lines that goes on while the job runs and ends when it ends."""
        query = [("tail", None if tail is None else int(tail))]
        path = f"crater/jobs/{int(id)}/logs"
        if follow:
            return self.http.lines(path, query + [("follow", "1")])
        text = self.http.request("GET", path, query=query)
        return text or ""

    def events(self, id) -> list[dict]:  # noqa: A002
        """The Kubernetes events of the job and its pods (type, reason, message, at, object)."""
        return self.http.request("GET", f"crater/jobs/{int(id)}/events")["events"]

    def profiles(self) -> dict:
        """What you may submit with: profiles, their accelerators and counts, your quota."""
        return self.http.request("GET", "crater/profiles")

    def _job(self, model):
        return Job.from_model(model, client=self)
