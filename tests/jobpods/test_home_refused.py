"""A job whose home claim the cluster refuses (here 422: an invalid claim name) fails at once,
saying why and giving its quota back, instead of staying ``admitted`` and retried forever.

A real QueueService (in-memory SQLite) dispatching against the tests' localkube: the claim is
read and created over HTTP as in the hub, only the admission cycle is skipped.
"""

from types import SimpleNamespace

from kubernetes_asyncio import client

from crater_hub.accelerators import Accelerator
from crater_hub.config import Crater
from crater_hub.db import migrate
from crater_hub.queue import home
from crater_hub.queue import service as service_mod
from tests.localkube_api import api_client

T4 = Accelerator("t4", "Tesla T4", "nvidia.com/gpu")
BAD = "Claim-Not_A-Name"  # a name Kubernetes refuses (422 Invalid)


class Spec:
    owner, name, profile, accelerator, gpus = "alice", "j", "gpu", T4, 1
    cpu, cpu_limit, memory, memory_limit = "1", None, "1Gi", None
    image, command, env = "busybox", ["true"], {}
    priority, priority_value, best_effort, max_runtime = "normal", 50, False, 60

    def shape(self):
        claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": BAD},
                 "spec": {"accessModes": ["ReadWriteOnce"],
                          "resources": {"requests": {"storage": "1Gi"}}}}
        return {"resource": "nvidia.com/gpu", "pod": {
            "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": BAD}}],
            "claims": [claim]}}


async def test_a_home_claim_the_cluster_refuses_fails_the_job_and_frees_its_quota(
        cluster, monkeypatch):
    async with api_client(cluster.kubeconfig) as api:
        monkeypatch.setattr(home, "shared_client", lambda name: getattr(client, name)(api))
        crater = Crater()
        service = service_mod.QueueService(crater, "sqlite://", namespace="default")
        service.inventory = SimpleNamespace(accelerators=lambda: [T4])
        service.pod_cache = None  # not reached: the claim is refused first
        await service.db.call(migrate.upgrade, service.db.engine)
        [job] = await service.db.run(service.store.insert_rows, [Spec()], "default")
        service.jobs[job.id] = job
        assert await service.store.transition(job, "admitted", "admitted for the test", expect="queued")
        assert crater.ledger.usage("alice").gpus == 1

        await service.reconciler.dispatch_locked(job)

        model = await service.get(job.id)
        assert model["state"] == "failed", model
        assert f"the cluster refused its home volume (claim default/{BAD}: 422" in model["reason"]
        assert "ask your administrator" in model["reason"]
        assert crater.ledger.usage("alice").gpus == 0
        assert not job.dispatched
        service.db.close()
