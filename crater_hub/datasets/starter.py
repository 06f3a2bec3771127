"""Seed the datasets (:mod:`.seed`) once the hub has started, from ``crater_hub.setup(c)``.

Through :func:`crater_hub.hubstart.after_hub_start` (which says why this is the hook): only when
``c`` is being loaded by a starting hub; anywhere else nothing is scheduled. A failure is logged,
never fatal: the hub serves without the demo dataset.
"""

from ..hubstart import after_hub_start


def _namespace(app, crater):
    """Where servers run: the spawner's configured namespace (the most derived section first)."""
    from kubespawner import KubeSpawner

    cls = app.spawner_class
    if isinstance(cls, type) and issubclass(cls, KubeSpawner):
        for klass in cls.mro():
            section = app.config.get(klass.__name__) if klass.__name__ in app.config else None
            if section is not None and "namespace" in section:
                return section["namespace"]
        return KubeSpawner._namespace_default(None)
    return crater.jobs_namespace or "default"


def _image(app):
    for name in ("CraterSpawner", "KubeSpawner", "Spawner"):
        section = app.config.get(name) if name in app.config else None
        if section is not None and isinstance(section.get("image"), str):
            return section["image"]
    return "quay.io/jupyterhub/k8s-singleuser-sample:4.2.0"


async def _seed(app):
    from ..config import Crater
    from .seed import seed

    crater = Crater.shared(app.config)
    await seed(crater, _namespace(app, crater), _image(app))


def schedule(c):
    after_hub_start("datasets: seeding the data volume or the demo dataset", _seed)
