"""A cancel that lands while an admission cycle is deciding wins: the user who was told
"cancelled" never sees the job admitted or run. A real QueueService on a real (in-memory SQLite)
database; the cluster side (capacity, dispatch) is replaced, as no cluster takes part."""

import asyncio
from types import SimpleNamespace

import pytest
from traitlets.config import Config

from crater_hub.accelerators import Accelerator
from crater_hub.config import Crater
from crater_hub.db import migrate
from crater_hub.policy.ledger import SERVER, Holding
from crater_hub.queue import engine
from crater_hub.queue import service as service_mod
from crater_hub.queue.backends import embedded as embedded_mod


class Spec:
    owner, name, profile, accelerator, gpus = "alice", "j", "cpu", None, 0
    cpu, cpu_limit, memory, memory_limit = "1", None, "1Gi", None
    image, command, env = "python", ["true"], {}
    priority, priority_value, best_effort, max_runtime = "normal", 50, False, 60

    def shape(self):
        return {}


async def _service(monkeypatch, decision):
    service = service_mod.QueueService(Crater(), "sqlite://", namespace="ns")
    await service.db.call(migrate.upgrade, service.db.engine)
    [job] = await service.db.run(service.store.insert_rows, [Spec()], "default")
    service.jobs[job.id] = job
    monkeypatch.setattr(service.queue_backend, "nodes", lambda active, finished: [])
    monkeypatch.setattr(embedded_mod.engine, "schedule", lambda *args: decision(job))
    dispatched = []

    async def dispatch(job):
        dispatched.append(job.id)

    monkeypatch.setattr(service.reconciler, "dispatch_locked", dispatch)
    return service, job, dispatched


async def test_cancel_during_admission_stays_cancelled(monkeypatch):
    service, job, dispatched = await _service(
        monkeypatch, lambda job: engine.Decision(admit=[(job.id, "node-1")]))
    cancel = asyncio.create_task(service.cancel(job.id, "alice"))
    await asyncio.sleep(0)  # the cancel holds the job's lock, its write on the database thread
    await service.queue_backend.cycle()
    assert (await cancel)["state"] == "cancelled"
    model = await service.get(job.id)
    assert model["state"] == "cancelled"
    assert [t["state"] for t in model["transitions"]] == ["queued", "cancelled"]
    assert dispatched == []
    service.db.close()


async def test_cancel_during_preemption_stays_cancelled(monkeypatch):
    service, victim, _ = await _service(monkeypatch, lambda job: engine.Decision(
        preempt=[(job.id, 99)]))
    assert await service.store.transition(victim, "admitted", "admitted for the test")
    [other] = await service.db.run(service.store.insert_rows, [Spec()], "default")  # something queued to decide on
    service.jobs[other.id] = other
    cancel = asyncio.create_task(service.cancel(victim.id, "alice"))
    await asyncio.sleep(0)
    await service.queue_backend.cycle()
    assert (await cancel)["state"] == "cancelled"
    model = await service.get(victim.id)
    assert [t["state"] for t in model["transitions"]] == ["queued", "admitted", "cancelled"]
    service.db.close()


async def test_a_spawn_while_a_cycle_decides_keeps_the_job_from_exceeding_the_quota(monkeypatch):
    """The cycle decided on usage without the server; the queue's re-check before committing
    sees it (both reserve in the one ledger, on the loop) and admits only once it is gone."""
    t4 = Accelerator("t4", "Tesla T4", "nvidia.com/gpu")
    config = Config()
    config.Crater.quotas = {"default": {"gpus": 2}}
    crater = Crater(config=config)
    service = service_mod.QueueService(crater, "sqlite://", namespace="ns")
    service.inventory = SimpleNamespace(accelerators=lambda: [t4])
    await service.db.call(migrate.upgrade, service.db.engine)
    spec = Spec()
    spec.accelerator, spec.gpus = t4, 2
    [job] = await service.db.run(service.store.insert_rows, [spec], "default")
    service.jobs[job.id] = job
    monkeypatch.setattr(service.queue_backend, "nodes", lambda active, finished: [])
    monkeypatch.setattr(embedded_mod.engine, "schedule",
                        lambda *args: engine.Decision(admit=[(job.id, "node-1")]))
    dispatched = []

    async def dispatch(job):
        dispatched.append(job.id)

    monkeypatch.setattr(service.reconciler, "dispatch_locked", dispatch)
    crater.ledger.hold("alice", (SERVER, ""), Holding(SERVER, t4, 2))  # a spawn, meanwhile

    await service.queue_backend.cycle()
    assert job.state == "queued" and dispatched == []
    assert crater.ledger.usage("alice").gpus == 2

    crater.ledger.release("alice", (SERVER, ""))  # the server stopped
    await service.queue_backend.cycle()
    assert job.state == "admitted" and dispatched == [job.id]
    assert crater.ledger.usage("alice").gpus == 2  # now the job's
    assert await service.store.transition(job, "cancelled", "test", expect="admitted")
    assert crater.ledger.usage("alice").gpus == 0  # an ended job gives its GPUs back
    service.db.close()


@pytest.mark.parametrize("strategy, later_starts", [("strict_fifo", False),
                                                     ("best_effort_fifo", True)])
async def test_strict_fifo_holds_back_the_owners_later_jobs_when_one_is_refused_at_commit(
        monkeypatch, strategy, later_starts):
    """Under strict_fifo a job refused at commit (a spawn took the quota since the cycle looked)
    keeps its owner's later jobs of the cycle from starting before it; best_effort_fifo lets
    the later one that fits start."""
    t4 = Accelerator("t4", "Tesla T4", "nvidia.com/gpu")
    config = Config()
    config.Crater.quotas = {"default": {"gpus": 2}}
    config.Crater.job_queueing_strategy = strategy
    crater = Crater(config=config)
    service = service_mod.QueueService(crater, "sqlite://", namespace="ns")
    service.inventory = SimpleNamespace(accelerators=lambda: [t4])
    await service.db.call(migrate.upgrade, service.db.engine)
    first, later = Spec(), Spec()
    first.accelerator, first.gpus = t4, 2
    later.accelerator, later.gpus = t4, 1
    jobs = await service.db.run(service.store.insert_rows, [first, later], "default")
    for job in jobs:
        service.jobs[job.id] = job
    monkeypatch.setattr(service.queue_backend, "nodes", lambda active, finished: [])
    monkeypatch.setattr(embedded_mod.engine, "schedule", lambda *args: engine.Decision(
        admit=[(job.id, "node-1") for job in jobs]))
    dispatched = []

    async def dispatch(job):
        dispatched.append(job.id)

    monkeypatch.setattr(service.reconciler, "dispatch_locked", dispatch)
    crater.ledger.hold("alice", (SERVER, ""), Holding(SERVER, t4, 1))  # a spawn, meanwhile

    await service.queue_backend.cycle()
    assert jobs[0].state == "queued"
    assert (jobs[1].state == "admitted") is later_starts
    assert dispatched == ([jobs[1].id] if later_starts else [])
    service.db.close()
