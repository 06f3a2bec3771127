"""What a batch job's pod takes from its owner's default server: shaping, identity and home.

A job must be no weaker than a notebook and see what the notebook sees, so everything here is
read from the user's own spawner (the default server's, ``user.spawner``), as KubeSpawner and
:mod:`.shaping` would use it for a spawn of the same profile — never copied from configuration by
hand:

- the pod fields a spawn would get (:data:`POD_TRAITS`): the operator's node selector and
  tolerations, the accelerator's, and the profile's ``kubespawner_override``, by
  :func:`.shaping.shaped` on a copy, so the live spawner (maybe mid-spawn) is never touched;
- z2jh's single-user identity: ``uid``, ``gid``, ``fs_gid``, ``supplemental_gids`` (callables
  called as KubeSpawner calls them);
- the home: the spawner's ``volumes``/``volume_mounts`` expanded for this user by KubeSpawner's own
  ``_expand_all`` (``{username}``, ``{servername}``, ``{pvc_name}``...), and the claim KubeSpawner
  would create (``get_pvc_manifest``: storage class, capacity, access modes) when it does not
  exist yet; the working directory is the home's mount path unless the job names one.

The result is plain JSON, frozen into the job's record at submit; the queue builds the Job from
it (:func:`crater_hub.queue.manifest.build`) without knowing about spawners.
"""

import json

from jupyterhub.utils import maybe_future

from ..kube.client import serialize
from . import shaping

#: spawner traits that shape a pod (not its container) and that a job pod takes as they are
POD_TRAITS = ("node_selector", "tolerations", "node_affinity_required", "node_affinity_preferred",
              "pod_affinity_required", "pod_affinity_preferred", "pod_anti_affinity_required",
              "pod_anti_affinity_preferred", "image_pull_secrets", "image_pull_policy",
              "scheduler_name")
IDENTITY_TRAITS = ("uid", "gid", "fs_gid", "supplemental_gids")
HOME_MODES = ("auto", "never")


def baseline_of(spawner, profiles):
    """The configured values of the traits a spawn may change: the spawner's own snapshot, taken
    before its first shaping; taken now (and kept, as its first spawn would take it: the same
    traits, still unshaped) when it has not spawned yet."""
    baseline = getattr(spawner, "_crater_baseline", None)
    if baseline is None:
        keys = {k for p in profiles for k in p.kubespawner_override}
        baseline = spawner._crater_baseline = shaping.snapshot(spawner, keys)
    return baseline


SHAPED_FOR_JOBS = (*POD_TRAITS, *IDENTITY_TRAITS, "volumes", "volume_mounts", "storage_pvc_ensure")


def _shaped(spawner, spec, profiles):
    """The traits a job pod takes, as :func:`.shaping.shaped` gives them for ``spec``; kept on the
    spawner per profile and accelerator choice (its baseline and the profile's override are
    fixed once the hub runs), as JSON, so each job gets a fresh copy cheaply. Callable traits
    (a ``uid`` function, say) are called per job by the caller, never kept."""
    acc = spec.accelerator
    key = (spec.profile, acc.slug if acc is not None else None, bool(spec.gpus))
    cache = spawner.__dict__.setdefault("_crater_job_shapes", {})
    if key not in cache:
        view = shaping.shaped(spawner, spec, baseline_of(spawner, profiles))
        values = {name: getattr(view, name) for name in SHAPED_FOR_JOBS}
        callables = [name for name, value in values.items() if callable(value)]
        values = {name: None if name in callables else value for name, value in values.items()}
        cache[key] = json.dumps({**values, "_callables": callables}, default=repr)
    return json.loads(cache[key])


def _home(spawner, volumes, mounts):
    """The home's volumes, mounts and claim to create, expanded for the spawner's user; kept on
    the spawner per configuration (expanding is most of a submit's cost, and the same each time)."""
    key = json.dumps([volumes, mounts, spawner.pvc_name, spawner.working_dir], sort_keys=True,
                     default=repr)
    cache = spawner.__dict__.setdefault("_crater_job_home", {})
    if key not in cache:
        # private KubeSpawner helpers: it offers no public way to expand its {username}-style
        # templates in volumes outside get_pod_manifest, which builds the server's whole pod
        volumes = serialize(spawner._expand_all(spawner._sorted_dict_values(volumes)))
        mounts = serialize(spawner._expand_all(spawner._sorted_dict_values(mounts)))
        claims = {v["persistentVolumeClaim"]["claimName"] for v in volumes
                  if "persistentVolumeClaim" in v}
        own = [serialize(spawner.get_pvc_manifest())] if spawner.pvc_name in claims else []
        cache.clear()  # one configuration at a time: the last one asked for
        cache[key] = json.dumps([volumes, mounts, own, _home_path(spawner, volumes, mounts)])
    return json.loads(cache[key])  # a fresh copy for each job


async def job_pod(spawner, spawn_spec, profiles, *, home=True, workdir=None):
    """The pod fields of a job of ``spawn_spec`` (a resolved
    :class:`crater_hub.policy.workload.WorkloadSpec`) owned by ``spawner``'s user: a JSON-shaped
    dict (see :func:`crater_hub.queue.manifest.build`).

    ``home``: mount the default server's home (False when the job runs in another namespace than
    the spawner's, or ``Crater.job_home`` is ``never``); ``workdir``: the job's own working
    directory, else the home's mount path.
    """
    view = _shaped(spawner, spawn_spec, profiles)
    pod = {name: view[name] for name in POD_TRAITS}
    pod["image_pull_secrets"] = [{"name": s} if isinstance(s, str) else s
                                 for s in pod["image_pull_secrets"] or []]
    for name in IDENTITY_TRAITS:
        value = getattr(spawner, name) if name in view["_callables"] else view[name]
        pod[name] = await maybe_future(value(spawner)) if callable(value) else value
    pod["namespace"] = spawner.namespace
    pod["volumes"], pod["volume_mounts"], pod["claims"] = [], [], []
    pod["server_pod"] = spawner.pod_name
    pod["workdir"] = workdir
    if home:
        volumes, mounts, claims, home_path = _home(spawner, view["volumes"], view["volume_mounts"])
        if not view["storage_pvc_ensure"]:  # KubeSpawner would not create it either
            claims = []
        pod["volumes"], pod["volume_mounts"], pod["claims"] = volumes, mounts, claims
        if workdir is None:
            pod["workdir"] = home_path
    return pod


def _home_path(spawner, volumes, mounts):
    """The home's mount path: the mount of the spawner's own claim, else of the first writable
    claim; the spawner's ``working_dir`` when it sets one."""
    if spawner.working_dir:
        return spawner.working_dir
    by_name = {v["name"]: v.get("persistentVolumeClaim") for v in volumes}
    writable = [m for m in mounts if by_name.get(m["name"]) and not m.get("readOnly")
                and not by_name[m["name"]].get("readOnly")]
    own = [m for m in writable if by_name[m["name"]]["claimName"] == spawner.pvc_name]
    chosen = (own or writable or [None])[0]
    return chosen["mountPath"] if chosen else None


async def for_user(user, spawn_spec, profiles, *, namespace, job_home="auto", workdir=None):
    """The pod fields of a job of ``user`` (a JupyterHub User) running in ``namespace``: shaped by
    their default server's spawner; with the home unless ``job_home`` is ``never`` or the jobs
    run in another namespace than the servers'. ``{}`` when the hub's spawner is no KubeSpawner."""
    from kubespawner import KubeSpawner

    spawner = user.spawner  # the default server's: the one whose home the notebook client sees
    if not isinstance(spawner, KubeSpawner) or spawn_spec is None:
        return {}
    home = job_home != "never" and spawner.namespace == namespace
    return await job_pod(spawner, spawn_spec, profiles, home=home, workdir=workdir)
