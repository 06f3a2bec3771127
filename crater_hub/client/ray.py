"""Ray clusters from a notebook, through the hub: no kubeconfig, no Kubernetes rights.

    from crater_hub.client import ray as cray
    with cray.new_cluster(workers=2, accelerator="t4", gpus=1) as cluster:
        cluster.wait()
        jobs = cluster.job_client()          # ray.job_submission.JobSubmissionClient
        job_id = jobs.submit_job(entrypoint="python -c 'import ray; ray.init(); ...'")
        cluster.scale(1)
    # leaving the block shuts the cluster down; so does stopping this notebook server

The hub creates the RayCluster with its own service account, bound to the server whose
``JUPYTERHUB_API_TOKEN`` asked (``lifetime="server"``). Jobs reach the head's Jobs API through the
hub's proxy ``/hub/crater/ray/<cluster>/dashboard/``, which authenticates this token and adds
the cluster's Ray token itself: notebooks cannot reach pods' IPs under z2jh's NetworkPolicy.

The standard library only, like the jobs client; :meth:`Cluster.job_client` imports ``ray``
(install ``ray[default]`` in the notebook image for it).
"""

from __future__ import annotations

import time

from ._http import Connection, CraterError, CraterTimeout

PATH = "crater/ray/clusters"


class Cluster:
    """A Ray cluster as the hub last reported it (``info``); methods call the hub."""

    def __init__(self, connection, info):
        self._connection = connection
        self.info = info

    name = property(lambda self: self.info["name"])
    state = property(lambda self: self.info["state"])
    workers = property(lambda self: self.info["workers"])
    ready_workers = property(lambda self: self.info["ready_workers"])
    #: ``lifetime="idle"``: when the hub deletes the cluster unless it is used (ISO 8601, UTC)
    expires_at = property(lambda self: self.info.get("expires_at"))
    #: ``lifetime="idle"``: true once the deletion is near (``Crater.ray_idle_warning``)
    idle_warning = property(lambda self: bool(self.info.get("idle_warning")))

    def __repr__(self):
        expiry = f", deleted at {self.expires_at} unless used" if self.expires_at else ""
        return (f"<Ray cluster {self.name}: {self.state}, {self.ready_workers}/{self.workers} "
                f"workers{expiry}>")

    @property
    def dashboard_url(self):
        """The head's dashboard (and Jobs API) through the hub."""
        base = self._connection.api_url
        hub = base[: -len("api/")] if base.endswith("api/") else base
        return f"{hub}{self.info['dashboard_path']}".rstrip("/")

    def refresh(self):
        self.info = self._connection.request("GET", f"{PATH}/{self.name}")
        return self

    def wait(self, timeout=300, poll=2.0):
        """Until the head and every worker asked for are ready; :class:`CraterTimeout` after
        ``timeout`` seconds. With Kueue a cluster is ``queued`` (no pods) until Kueue admits it."""
        deadline = time.monotonic() + timeout
        while self.refresh().state != "ready":
            if time.monotonic() > deadline:
                queued = (f" (still waiting for Kueue's admission in LocalQueue {self.info.get('queue')})"
                          if self.state == "queued" else "")
                raise CraterTimeout(f"Ray cluster {self.name} not ready after {timeout}s: {self!r}{queued}")
            time.sleep(poll)
        return self

    def scale(self, workers):
        """Set the number of workers (the hub checks your quota: 403 beyond it)."""
        self.info = self._connection.request("PATCH", f"{PATH}/{self.name}", body={"workers": workers})
        return self

    def shutdown(self):
        """Delete the cluster (its pods go with it); a cluster already gone is fine."""
        try:
            self._connection.request("DELETE", f"{PATH}/{self.name}")
        except CraterError as e:
            if e.status != 404:
                raise

    def job_client(self):
        """A ``ray.job_submission.JobSubmissionClient`` for this cluster, through the hub."""
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard_url,
                                   headers={"Authorization": f"token {self._connection.token}"})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()
        return False


def _connection(api_url=None, token=None):
    return Connection(api_url, token)


def new_cluster(workers=2, accelerator="t4", gpus=1, *, profile=None, image=None, datasets=None,
                name=None, server=None, lifetime=None, api_url=None, token=None) -> Cluster:
    """Ask the hub for a Ray cluster of ``workers`` workers with ``gpus`` × ``accelerator``
    each (``accelerator=None``: CPU workers). ``lifetime="server"`` (default): it goes with the
    notebook server ``server`` (default: this one); ``lifetime="idle"``: the hub deletes it once
    unused for its idle time (no running job, no dashboard use); ``expires_at`` says when."""
    body = {"workers": workers, "accelerator": accelerator}
    if accelerator is not None:
        body["gpus"] = gpus
    for key, value in (("profile", profile), ("image", image), ("datasets", datasets),
                       ("name", name), ("server", server), ("lifetime", lifetime)):
        if value is not None:
            body[key] = value
    connection = _connection(api_url, token)
    return Cluster(connection, connection.request("POST", PATH, body=body))


def list_clusters(api_url=None, token=None) -> list:
    connection = _connection(api_url, token)
    return [Cluster(connection, info) for info in connection.request("GET", PATH)["clusters"]]


def get_cluster(name, api_url=None, token=None) -> Cluster:
    connection = _connection(api_url, token)
    return Cluster(connection, connection.request("GET", f"{PATH}/{name}"))
