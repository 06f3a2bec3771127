"""CraterSpawner: KubeSpawner with crater_hub's policy (profiles, quotas) applied to every spawn.

Modules: ``spawner`` (the class), ``form`` (the spawn form), ``shaping`` (the pod's resources),
``usage`` (what a user's servers hold). What a spawn may ask for is decided in
:mod:`crater_hub.policy`, which the job queue shares; a Ray profile's cluster is made by
:mod:`crater_hub.ray` (a layer below, see :mod:`crater_hub.ray.profile`).
"""

from .spawner import CraterSpawner

__all__ = ["CraterSpawner"]
