"""The idle mark in a real browser: a real Prometheus scrapes localkube's DCGM exporters, a real
hub serves the heatmap; the sleeping pod's GPU cell is drawn dashed with "idle" and 0 %, the busy
loop's is coloured and unmarked, and "Only allocated-but-idle" leaves just the idle cell."""

import asyncio

from playwright.async_api import expect

from tests.e2e.hub import HubProcess
from tests.helpers import wait_for

from ..gpus.conftest import gpu_cluster, prometheus  # noqa: F401 (fixtures)
from ..gpus.test_heatmap_prometheus import gpu_pod
from .test_spawn_page import log_in

DEADLINE_MS = 60_000


async def test_idle_cell_is_marked(gpu_cluster, prometheus, tmp_path, browser, artifacts):  # noqa: F811
    lk, core = gpu_cluster
    await core.create_namespace({"metadata": {"name": "lab"}})
    await core.create_namespaced_pod("lab", gpu_pod("busy", "gpu-v100-0",
                                                    command=("sh", "-c", "while :; do :; done")))
    await core.create_namespaced_pod("lab", gpu_pod("idle", "gpu-v100-0"))
    prometheus.scrape_localkube(lk)
    hub = HubProcess(tmp_path / "hub", tmp_path / "kubeconfig", extra_args=[
        f"--Crater.prometheus_url={prometheus.url}",
        f"--Crater.prometheus_scrape_interval={prometheus.scrape_interval}",
        "--Crater.gpu_idle_window=2"])
    await asyncio.to_thread(hub.start)
    context = None
    try:
        context, page = await log_in(browser, hub, "idle-watcher")
        await page.goto("/hub/crater/gpus?node=v100")
        idle = page.locator('.crater-cell[data-idle="true"]')
        # the page refreshes itself every 10 s: the mark appears without a reload
        await expect(idle).to_have_count(1, timeout=DEADLINE_MS)
        assert "crater-idle" in await idle.get_attribute("class")
        await expect(idle.locator("[data-idle-mark]")).to_have_text("idle")
        await expect(idle).to_contain_text("0 %")
        await expect(idle.locator("[data-owner]")).to_contain_text("idle")  # the pod's name
        busy = page.locator('.crater-cell[data-idle="false"]:has([data-owner])')
        await expect(busy).to_have_count(1)

        async def busy_reads_high():  # the page refreshes itself; the loop shares 2 busy cores
            return float(await busy.get_attribute("data-utilization") or 0) >= 0.5

        await wait_for(busy_reads_high, timeout=60, interval=0.5, message="the busy cell >= 50 %")
        assert "hsl(" in (await busy.get_attribute("style"))
        await expect(page.locator("#crater-gpus-note")).to_be_hidden()
        await page.screenshot(path=str(artifacts / "gpu-heatmap-idle.png"), full_page=True)
        await page.check("#crater-filter-idle")
        await expect(page.locator(".crater-cell")).to_have_count(1, timeout=15_000)
        await expect(page.locator(".crater-cell")).to_have_attribute("data-idle", "true")
    finally:
        if context is not None:
            await context.close()
        await asyncio.to_thread(hub.stop)
