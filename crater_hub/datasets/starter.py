"""Seed the datasets (:mod:`.seed`) once the hub has started, from ``crater_hub.setup(c)``.

The same hook as the job queue's (:mod:`crater_hub.queue.starter` says why): only when ``c`` is
being loaded by a starting hub; anywhere else nothing is scheduled. A failure is logged, never
fatal: the hub serves without the demo dataset.
"""

import asyncio
import logging

log = logging.getLogger("crater_hub.datasets")
_pending = set()


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


def schedule(c):
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    from jupyterhub.app import JupyterHub

    app = JupyterHub.instance() if JupyterHub.initialized() else None
    if app is None or getattr(app, "subapp", None) or not hasattr(app, "_start_future"):
        return

    async def seed_when_started():
        from ..config import Crater
        from .seed import seed

        try:
            await asyncio.shield(app._start_future)
            crater = Crater.shared(app.config)
            await seed(crater, _namespace(app, crater), _image(app))
        except Exception:
            log.exception("crater datasets: seeding the data volume or the demo dataset failed")

    task = loop.create_task(seed_when_started(), name="crater-datasets-seed")
    _pending.add(task)
    task.add_done_callback(_pending.discard)
