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

A server started with a Ray profile has its cluster already: :func:`current` finds it
(``CRATER_RAY_CLUSTER``), and ``RAY_ADDRESS``/``RAY_JOB_HEADERS`` make ``ray job submit`` work
in a terminal with no arguments.

``ray.init("ray://...")`` (Ray Client) is possible but fragile: it needs the same Ray *and*
Python versions here and in the cluster, and a NetworkPolicy egress rule to the head's port
10001 (see helm-values/); :meth:`Cluster.ray_init_address` checks the versions first and says
what differs. The Jobs API through the hub is the default path.

The standard library only, like the jobs client; :meth:`Cluster.job_client` imports ``ray``
(install ``ray[default]`` in the notebook image for it).
"""

from __future__ import annotations

import os
import re
import sys
import time

from ._http import Connection, CraterError, CraterTimeout

PATH = "crater/ray/clusters"
ENV_CLUSTER = "CRATER_RAY_CLUSTER"  # set by the hub in a Ray profile's server
CLIENT_PORT = 10001


class RayVersionError(RuntimeError):
    """``ray://`` refused before connecting: the notebook's Ray or Python differs from the
    cluster's (Ray Client needs both identical)."""


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

    def ray_init_address(self, *, set_token=True, ray_version=None, python_version=None):
        """The ``ray://`` address of this cluster's head for ``ray.init()``, after checking that
        this notebook runs the cluster's Ray version (``rayVersion``) and, when the cluster's
        image names one (``...-py311``), its Python version: :class:`RayVersionError` says
        what differs otherwise. ``set_token``: put the cluster's Ray token in this process's
        ``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN``, which Ray reads when it connects.

        Needs an egress rule from notebooks to the head's port 10001 (z2jh's NetworkPolicy
        blocks it by default; see helm-values/); the Jobs API (:meth:`job_client`) does not."""
        if ray_version is None:
            try:
                import ray
            except ImportError:
                raise RayVersionError("ray is not installed in this notebook: pip install "
                                      f"'ray[client]=={self.info.get('ray_version')}'") from None
            ray_version = ray.__version__
        python_version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
        differences = []
        if self.info.get("ray_version") and ray_version != self.info["ray_version"]:
            differences.append(f"Ray {ray_version} here, {self.info['ray_version']} in the cluster")
        image = self.info.get("image") or ""
        tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
        found = re.search(r"-py3(\d+)", tag)
        if found and python_version != f"3.{found.group(1)}":
            differences.append(f"Python {python_version} here, 3.{found.group(1)} in the cluster "
                               f"(image {image})")
        if differences:
            raise RayVersionError(
                f"ray:// to Ray cluster {self.name} would fail: " + "; ".join(differences)
                + ". Ray Client needs identical versions: install the cluster's Ray here, or use "
                "the Jobs API (cluster.job_client(), or `ray job submit` with RAY_ADDRESS).")
        if set_token:
            token = self.info.get("token")
            if token is None:
                raise CraterError(f"the hub gave no Ray token for {self.name} (not your cluster?)", 403)
            os.environ["RAY_AUTH_MODE"] = "token"
            os.environ["RAY_AUTH_TOKEN"] = token
        return f"ray://{self.name}-head-svc:{CLIENT_PORT}"

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


def current(api_url=None, token=None) -> Cluster:
    """The cluster a Ray profile started with this server (``CRATER_RAY_CLUSTER``)."""
    name = os.environ.get(ENV_CLUSTER)
    if not name:
        raise CraterError(f"{ENV_CLUSTER} is not set: this server was not started with a Ray "
                          "profile; make a cluster with new_cluster()", 404)
    return get_cluster(name, api_url, token)


def ray_init_address(cluster=None, **kwargs) -> str:
    """``ray://`` address of ``cluster`` (default: :func:`current`), version-checked: see
    :meth:`Cluster.ray_init_address`."""
    return (cluster if cluster is not None else current()).ray_init_address(**kwargs)
