"""Fixtures for GPU usage tests: a real Prometheus, and a localkube with shared GPUs for it to scrape.

``prometheus`` runs Debian's ``prometheus`` server (never a fake): a test that needs it fails,
naming the package, where it is not installed — it does not skip. Other rooms' tests (heatmap,
accounting) use the same fixtures::

    async def test_something(gpu_cluster, prometheus):
        lk, core = gpu_cluster
        prometheus.scrape_localkube(lk)                       # every node's DCGM exporter
        await prometheus.wait_for('DCGM_FI_DEV_GPU_UTIL{pod="busy"} > 80')
        cache = UtilizationCache(prometheus.client, interval=prometheus.scrape_interval)
"""

import asyncio
from pathlib import Path

import pytest

from crater_hub.gpus.prometheus import Prometheus, PrometheusError
from crater_hub.gpus.prometheus_server import PrometheusServer
from tests.helpers import wait_for
from tests.localkube_api import localkube_api

SHARED_GPU_CLUSTER = Path(__file__).parents[1] / "data" / "clusters" / "mig-and-timesliced.yaml"


class RunningPrometheus:
    """A started :class:`PrometheusServer` and a client of it, with waits on what it has scraped."""

    def __init__(self, server):
        self.server = server
        self.url = server.url
        self.scrape_interval = server.scrape_interval
        self.client = Prometheus(server.url)

    def scrape_localkube(self, lk):
        """Scrape every node's DCGM exporter of the in-process localkube ``lk``."""
        nodes = lk.store.iter_raw(lk.registry.lookup("", "v1", "nodes"))
        self.server.set_dcgm_targets(lk.url, [n["metadata"]["name"] for n in nodes])

    async def query(self, promql):
        return await self.client.query(promql)

    async def wait_for(self, promql, predicate=bool, timeout=30, message=None):
        """Poll ``promql`` until ``predicate(result)`` holds (default: any series); the result."""
        async def check():
            try:
                result = await self.client.query(promql)
            except PrometheusError:
                return None
            return result if predicate(result) else None
        return await wait_for(check, timeout=timeout, interval=0.25, message=message or promql)

    async def stop(self):
        await asyncio.to_thread(self.server.stop)


@pytest.fixture
async def prometheus(tmp_path):
    """A real Prometheus (1 s scrapes) in ``tmp_path``; stopped after the test."""
    server = PrometheusServer(tmp_path / "prometheus", scrape_interval=1.0)
    try:
        await asyncio.to_thread(server.start)
    except RuntimeError as e:  # not installed, or it would not run: the test fails, saying why
        pytest.fail(str(e))
    running = RunningPrometheus(server)
    yield running
    await running.stop()


@pytest.fixture
async def gpu_cluster(tmp_path):
    """An in-process localkube on tests/data/clusters/mig-and-timesliced.yaml and a CoreV1Api."""
    async with localkube_api(SHARED_GPU_CLUSTER, tmp_path / "localkube",
                             tmp_path / "kubeconfig") as pair:
        yield pair
