"""The one-click Ray profile: what a spawn of a ``kind: ray`` profile asks of the ray room.

A Ray profile (``Crater.profiles[*].kind: ray``, with ``ray: {workers: [1, 2, 4]}``) starts a
notebook server *and* a RayCluster in one spawn. The profile's choices (accelerator × count,
CPU, memory) shape each **worker**, as they shape a server of an ordinary profile; the server
itself is a CPU notebook (the spawner's configured CPU and memory, the profile's image and
``kubespawner_override``); the cluster runs ``Crater.ray_image`` as clusters made through the
REST API do. The spawn form adds a ``workers`` field (one of the profile's counts).

Layering: the spawner imports this module (the ray room sits below the spawner in the
import-linter layers, see pyproject.toml); nothing in the ray room imports the spawner. The
spawner keeps the spawn's order and its quota bookkeeping; this module offers what it needs:

- :func:`split`: the spawn's ``user_options`` → the workload request and the workers asked;
- :func:`workers_for` and :func:`server_spec`: the checked worker count, the server's own spec;
- :func:`plan`: the RayCluster (without its owner yet) reserved in the quota ledger *before*
  the pod is made, so an over-quota spawn is refused with nothing created;
- :func:`bind`: the ownerReference to the server's pod once it exists (``lifetime: server``);
- :func:`server_env`: ``RAY_ADDRESS`` (the hub's dashboard proxy, which serves the Jobs API),
  ``RAY_JOB_HEADERS`` (the server's own hub token: Ray's job CLI and SDK read both), and
  ``CRATER_RAY_CLUSTER`` for :mod:`crater_hub.client.ray`.
"""

import json
from dataclasses import dataclass, replace

from ..policy.workload import PolicyError
from . import manifests

WORKERS = "workers"  # the spawn option (form field ``profile-option-<slug>--workers``)
ENV_ADDRESS = "RAY_ADDRESS"
ENV_HEADERS = "RAY_JOB_HEADERS"  # ray.dashboard.modules.job.cli: --headers, else this (JSON)
ENV_CLUSTER = "CRATER_RAY_CLUSTER"


@dataclass
class Plan:
    """The cluster a Ray-profile spawn makes: its manifest (no owner yet) and the worker spec."""

    name: str
    manifest: dict
    workers: int
    spec: object  # the workers' WorkloadSpec


def profile_of(profiles, slug):
    return next((p for p in profiles if p.slug == slug), None)


def is_ray(profiles, slug):
    profile = profile_of(profiles, slug)
    return profile is not None and profile.kind == "ray"


def split(user_options):
    """``(workload request, workers or None)``: ``workers`` is the Ray profile's own option, the
    rest goes to :func:`crater_hub.policy.workload.resolve` as any spawn's options do."""
    options = dict(user_options or {}) if isinstance(user_options, dict) else user_options
    if not isinstance(options, dict):
        return options, None
    return options, options.pop(WORKERS, None)


def workers_for(profile, value):
    """The number of workers asked (a whole number or its string, as forms send it), one of the
    profile's counts; absent: the first. A ``workers`` option for another kind of profile is a 400."""
    if profile.kind != "ray":
        if value is not None:
            raise PolicyError(f"workers: profile {profile.slug!r} starts no Ray cluster; leave "
                              "'workers' out")
        return 0
    offered = ", ".join(map(str, profile.ray_workers))
    if value is None:
        return profile.ray_workers[0]
    count = int(value.strip()) if isinstance(value, str) and value.strip().isdigit() else value
    if isinstance(count, bool) or not isinstance(count, int) or count not in profile.ray_workers:
        raise PolicyError(f"workers must be one of {offered} in profile {profile.slug!r}, got {value!r}")
    return count


def server_spec(spec):
    """The notebook server's part of a Ray profile's spec: no accelerator, the configured CPU
    and memory (the profile's choices shape the workers); image, overrides and datasets as
    chosen (the workers mount the datasets too)."""
    return replace(spec, accelerator=None, gpus=0, cpu_guarantee=None, cpu_limit=None,
                   mem_guarantee=None, mem_limit=None)


def plan(crater, *, owner, namespace, server, spec, workers):
    """The cluster of a Ray-profile spawn of ``server`` (its name, '' for the default one)."""
    name = manifests.cluster_name(owner)
    rc = manifests.configured(
        crater, name=name, namespace=namespace, owner=owner, spec=replace(spec, image=None),
        workers=workers, max_workers=max(crater.ray_max_workers, workers), lifetime="server",
        server=server)
    rc["metadata"]["annotations"][manifests.ANNOTATION + "spawned-with"] = "profile"
    return Plan(name, rc, workers, spec)


def bind(rc, pod):
    """``rc`` owned by the server's pod (``metadata`` with ``name`` and ``uid``): the garbage
    collector deletes the cluster with the pod, whatever stops the server."""
    rc["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": "Pod", "name": pod["name"],
                                          "uid": pod["uid"], "blockOwnerDeletion": False}]
    return rc


def server_env(api_url, token, name):
    """The server's env for its cluster ``name``: Ray's job CLI/SDK work with no arguments.

    ``api_url``: the hub API URL the server uses (``JUPYTERHUB_API_URL``, ``…/hub/api``)."""
    hub = api_url.rstrip("/")
    hub = hub[: -len("/api")] if hub.endswith("/api") else hub
    return {
        ENV_ADDRESS: f"{hub}/crater/ray/{name}/dashboard",
        ENV_HEADERS: json.dumps({"Authorization": f"token {token}"}),
        ENV_CLUSTER: name,
    }


def bound_to(clusters, owner, server):
    """The names of ``owner``'s ``lifetime: server`` clusters bound to ``server``."""
    ann = manifests.ANNOTATION
    return [rc["metadata"]["name"] for rc in clusters
            if manifests.owner_of(rc) == owner
            and (rc["metadata"].get("annotations") or {}).get(ann + "lifetime") == "server"
            and (rc["metadata"].get("annotations") or {}).get(ann + "server") == server]
