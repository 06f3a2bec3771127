"""Environment variables a workload may not set: the names the platform owns.

``JUPYTERHUB_*`` (the hub's API token, URLs and identity), ``CRATER_*`` (what crater_hub tells a
job about itself) and every variable that selects devices
(:func:`crater_hub.accelerators.device_env_names`): with the NVIDIA container runtime's
environment strategy, ``NVIDIA_VISIBLE_DEVICES=all`` in a pod's env is every GPU of the node,
whatever the quota granted.
"""

from ..accelerators import device_env_names

RESERVED_PREFIXES = ("JUPYTERHUB_", "CRATER_")


def reserved_reason(name, accelerators=()):
    """Why ``name`` may not be set by a user ('' when it may); ``accelerators``: the catalog."""
    if name.startswith(RESERVED_PREFIXES):
        return (f"names starting with {' or '.join(RESERVED_PREFIXES)} are set by the hub")
    if name in device_env_names(accelerators):
        return "it selects devices, which the hub sets from the GPUs granted to the job"
    return ""
