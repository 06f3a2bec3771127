"""Pod shaping: set every resource-related KubeSpawner trait explicitly, on every spawn.

KubeSpawner keeps one spawner object per server across spawns and profile overrides are
``setattr`` calls, so a GPU request, node selector or toleration from one spawn used to survive
into the next (kubespawner #546, #691). Here each spawn first restores the traits to what the
operator configured (a snapshot taken before the first spawn), then applies the
:class:`~crater_hub.policy.workload.WorkloadSpec` — so a CPU spawn after a GPU spawn carries nothing of it.
"""

import copy

from ..merging import merge
from ..quantity import parse_quantity

SHAPED_TRAITS = ("image", "cpu_guarantee", "cpu_limit", "mem_guarantee", "mem_limit",
                 "extra_resource_guarantees", "extra_resource_limits", "node_selector", "tolerations")


def snapshot(spawner, override_keys=()):
    """The configured values of every trait a spawn may change."""
    return {name: copy.deepcopy(getattr(spawner, name)) for name in (*SHAPED_TRAITS, *override_keys)}


def apply(spawner, spec, baseline):
    """Reset the traits in ``baseline``, then shape the pod for ``spec``."""
    for name, value in baseline.items():
        setattr(spawner, name, copy.deepcopy(value))
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
