"""The attributes of a running server's spawner that ``crater_hub.spawner.shaping`` reads, set to
a plain server with ``volumes``: the starting point of the job-shaping tests."""

from types import SimpleNamespace


def plain_server(volumes):
    return SimpleNamespace(volumes=volumes, volume_mounts={},
                           extra_annotations={}, environment={}, image="img", cpu_guarantee=None,
                           cpu_limit=None, mem_guarantee=None, mem_limit=None,
                           extra_resource_guarantees={}, extra_resource_limits={},
                           node_selector={}, tolerations=[])
