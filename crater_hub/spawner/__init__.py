"""CraterSpawner: KubeSpawner with crater_hub's profiles and quotas (see ``spawner.py``).

The pure modules of this package (``profiles``, ``quotas``, ``options``) are imported by
``crater_hub.config``, which ``spawner.py`` imports in turn; so the spawner class is loaded on
first access (PEP 562) rather than at package import, which keeps that cycle from forming.
"""

__all__ = ["CraterSpawner"]


def __getattr__(name):
    if name == "CraterSpawner":
        from .spawner import CraterSpawner

        return CraterSpawner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
