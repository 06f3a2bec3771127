"""Pod shaping: set every resource-related KubeSpawner trait explicitly, on every spawn.

KubeSpawner keeps one spawner object per server across spawns and profile overrides are
``setattr`` calls, so a GPU request, node selector or toleration from one spawn used to survive
into the next (kubespawner #546, #691). Here each spawn first restores the traits to what the
operator configured (a snapshot taken before the first spawn), then applies the
:class:`~crater_hub.policy.workload.WorkloadSpec` — so a CPU spawn after a GPU spawn carries
nothing of it.

A pod that holds no NVIDIA GPU gets ``NVIDIA_VISIBLE_DEVICES=void``: CUDA images set ``all`` in
their own ENV, and with the NVIDIA container runtime's environment strategy that exposes every GPU
of the node to a pod that asked for none. A GPU spawn removes it again (the device plugin sets
the granted devices).

Batch jobs are shaped by the same code (:func:`shaped`): the profile's override and the
accelerator's terms applied to a copy of the configured traits, never to the live spawner.
"""

import copy

from ..accelerators import NO_NVIDIA_ENV, NVIDIA_DEVICES, holds_nvidia_gpu
from ..merging import merge
from ..policy import datasets as datasets_mod
from ..quantity import parse_quantity

SHAPED_TRAITS = ("image", "cpu_guarantee", "cpu_limit", "mem_guarantee", "mem_limit",
                 "extra_resource_guarantees", "extra_resource_limits", "node_selector", "tolerations",
                 "environment")
#: what :func:`add_datasets` changes, restored from its own snapshot on every spawn
DATASET_TRAITS = ("volumes", "volume_mounts", "extra_annotations")


def snapshot(spawner, override_keys=()):
    """The configured values of every trait a spawn may change."""
    return {name: copy.deepcopy(getattr(spawner, name)) for name in (*SHAPED_TRAITS, *override_keys)}


def apply(spawner, spec, baseline):
    """Reset the traits in ``baseline``, then shape the pod for ``spec``."""
    for name, value in baseline.items():
        setattr(spawner, name, copy.deepcopy(value))
    environment = dict(baseline.get("environment") or {})
    environment.pop(NVIDIA_DEVICES, None)  # set below, or by the device plugin: never by config
    acc = spec.accelerator
    if not holds_nvidia_gpu(acc.env if acc is not None else "", spec.gpus):
        environment.update(NO_NVIDIA_ENV)
    spawner.environment = environment
    if spec.image:
        spawner.image = spec.image
    for name in ("cpu_guarantee", "cpu_limit"):
        if getattr(spec, name) is not None:
            setattr(spawner, name, float(parse_quantity(getattr(spec, name))))
    for name in ("mem_guarantee", "mem_limit"):
        # Kubernetes quantities ("8Gi") in our config; JupyterHub's ByteSpecification wants bytes
        if getattr(spec, name) is not None:
            setattr(spawner, name, int(parse_quantity(getattr(spec, name))))
    acc = spec.accelerator
    if acc is not None and spec.gpus:
        count = str(spec.gpus)
        spawner.extra_resource_guarantees = {**baseline["extra_resource_guarantees"], acc.resource: count}
        spawner.extra_resource_limits = {**baseline["extra_resource_limits"], acc.resource: count}
        spawner.node_selector = {**baseline["node_selector"], **acc.node_selector}
        spawner.tolerations = [*baseline["tolerations"], *copy.deepcopy(list(acc.tolerations))]
    for name, value in spec.kubespawner_override.items():
        current = getattr(spawner, name)
        if isinstance(current, dict) and isinstance(value, dict):
            value = merge(current, value)  # KubeSpawner's override semantics
        setattr(spawner, name, copy.deepcopy(value))


class _Copy:
    """Trait values of ``spawner`` as a spawn would shape them, without touching the spawner:
    reads fall through to ``baseline`` (the configured value), then to the spawner; writes stay
    here."""

    def __init__(self, spawner):
        self.__dict__["_spawner"] = spawner
        self.__dict__["_values"] = {}  # apply() sets every baseline trait first, as copies

    def __getattr__(self, name):
        values = self.__dict__["_values"]
        if name not in values:
            values[name] = copy.deepcopy(getattr(self.__dict__["_spawner"], name))
        return values[name]

    def __setattr__(self, name, value):
        self.__dict__["_values"][name] = value


def shaped(spawner, spec, baseline):
    """The traits a spawn of ``spec`` would give ``spawner``, on a copy (see :class:`_Copy`).

    ``baseline``: the configured values of every trait a spawn may change (:func:`snapshot`,
    taken before the spawner's first spawn). Read the result's attributes by trait name.
    """
    view = _Copy(spawner)
    # a running server's datasets and own space are its own, never a job's: the configured values
    for name, value in spawner.__dict__.get("_crater_dataset_baseline", {}).items():
        setattr(view, name, copy.deepcopy(value))
    apply(view, spec, baseline)
    return view


def add_datasets(spawner, mounts, own_space=None):
    """Mount the spec's datasets (and the user's own space, writable) next to the configured
    volumes — as dict entries beside z2jh's ``home``, appended when the operator's are a list,
    never replacing them — and list them in the pod's ``crater.io/datasets`` annotation. The
    traits are first reset to their configured values (a snapshot taken at the first call), so
    a dataset of one spawn never survives into the next."""
    baseline = spawner.__dict__.get("_crater_dataset_baseline")
    if baseline is None:
        baseline = spawner._crater_dataset_baseline = {
            name: copy.deepcopy(getattr(spawner, name)) for name in DATASET_TRAITS}
    for name, value in baseline.items():
        setattr(spawner, name, copy.deepcopy(value))
    volumes, volume_mounts = datasets_mod.pod_volumes(mounts, own_space)
    for name, extra in (("volumes", volumes), ("volume_mounts", volume_mounts)):
        if not extra:
            continue
        current = getattr(spawner, name)
        if isinstance(current, dict):
            setattr(spawner, name, {**current, **extra})
        else:
            present = {v.get("name") for v in current if isinstance(v, dict)} if name == "volumes" else ()
            setattr(spawner, name, [*current, *(v for v in extra.values()
                                                if v["name"] not in present)])
    if mounts:
        spawner.extra_annotations = {**spawner.extra_annotations, **datasets_mod.annotation(mounts)}
