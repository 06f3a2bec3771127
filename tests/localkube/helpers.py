"""An in-process localkube for controller tests: a store, the demo nodes, chosen controllers.

No HTTP server and no process kubelet: tests play the kubelet's part themselves (bind, set a
phase, finish a graceful deletion), so every step a controller reacts to is explicit.
"""

from pathlib import Path
from types import SimpleNamespace

import yaml

from crater_hub.localkube.nodes import nodes_from_cluster_spec
from crater_hub.localkube.resources import Registry
from crater_hub.localkube.store import Store
from tests.helpers import wait_for

DEMO = Path(__file__).parents[2] / "crater_hub" / "localkube" / "demo-cluster.yaml"

__all__ = ["Cluster", "DEMO", "wait_for"]


class Cluster:
    """A store with namespaces and nodes, and controllers started on the running loop."""

    def __init__(self, tmp_path, spec=None, **store_options):
        self.registry = Registry()
        self.store = Store(self.registry, **store_options)
        self.state_dir = tmp_path
        self.controllers = []
        ns = self.res("", "namespaces")
        self.store.create(ns, {"metadata": {"name": "default"}})
        spec = spec if spec is not None else yaml.safe_load(DEMO.read_text())
        for node in nodes_from_cluster_spec(spec):
            self.store.create(self.res("", "nodes"), node)

    def res(self, group, plural):
        return self.registry.lookup(group, "v1", plural)

    def start(self, *controller_classes):
        """Create and start controllers; returns them in order."""
        made = [
            cls(SimpleNamespace(store=self.store, registry=self.registry, state_dir=self.state_dir))
            for cls in controller_classes
        ]
        for c in made:
            c.start()
        self.controllers.extend(made)
        return made

    async def stop(self):
        for c in reversed(self.controllers):
            await c.stop()

    # -- objects -------------------------------------------------------------------------------

    def pod(self, name, namespace="default"):
        return self.store.find(self.res("", "pods"), namespace, name)

    def job(self, name, namespace="default"):
        return self.store.find(self.registry.lookup("batch", "v1", "jobs"), namespace, name)

    def create_pod(self, name, containers=None, **spec):
        body = {
            "metadata": {"name": name},
            "spec": {
                "containers": containers or [{"name": "main", "image": "busybox:1.36"}],
                **spec,
            },
        }
        return self.store.create(self.res("", "pods"), body, "default")

    def create_job(self, name, command="true", restart="Never", template_spec=None, **spec):
        template = {
            "spec": {
                "restartPolicy": restart,
                "containers": [
                    {"name": "main", "image": "busybox:1.36", "command": ["sh", "-c", command]}
                ],
                **(template_spec or {}),
            }
        }
        body = {"metadata": {"name": name}, "spec": {"template": template, **spec}}
        return self.store.create(self.registry.lookup("batch", "v1", "jobs"), body, "default")

    def pods_of(self, job_name):
        """The Job's pods still in the store."""
        items, _ = self.store.list(self.res("", "pods"), "default")
        return [p for p in items if (p["metadata"].get("labels") or {}).get("job-name") == job_name]

    def events(self, name, reason=None):
        items, _ = self.store.list(self.res("", "events"), "default")
        return [
            e
            for e in items
            if e["involvedObject"]["name"] == name and reason in (None, e["reason"])
        ]

    # -- playing the kubelet -------------------------------------------------------------------

    def set_phase(self, name, phase, **status):
        def change(p):
            p["status"]["phase"] = phase
            p["status"].update(status)

        return self.store.mutate(
            self.res("", "pods"), "default", name, change, subresource="status"
        )

    def bind(self, name, node):
        return self.store.mutate(
            self.res("", "pods"), "default", name, lambda p: p["spec"].__setitem__("nodeName", node)
        )

    def finish_deletion(self, name):
        """What the kubelet does once a deleted pod's processes have exited."""
        return self.store.remove(self.res("", "pods"), "default", name)
