"""The GPU heatmap in a real browser, on the real hub and localkube: a user's T4 server shows as a
cell of its node with "you" and the server's link, the other devices as free cells; the filters
redraw the grid without a reload; without utilization the page says why."""

from playwright.async_api import expect

from ..e2e.hub import spawn, stop_server
from .test_spawn_page import log_in

PAGE_DEADLINE_MS = 15_000


async def test_heatmap_cells_owner_and_filters(crater_hub, browser, artifacts):
    hub, name = crater_hub, "heatmap-ann"
    context, page = await log_in(browser, hub, name)
    try:
        await spawn(hub, name, {"profile": "gpu", "accelerator": "t4", "gpus": 1})
        await page.goto("/hub/crater/gpus")
        t4 = page.locator('[data-accelerator-grid="t4"]')
        cells = t4.locator(".crater-cell")
        await expect(cells).to_have_count(8, timeout=PAGE_DEADLINE_MS)  # gpu-t4-0 has 8 T4s
        mine = t4.locator(".crater-cell:has([data-owner='you'])")
        await expect(mine).to_have_count(1)
        await expect(mine.locator("a")).to_have_attribute("href", f"/user/{name}/")
        await expect(mine).to_have_attribute("data-node", "gpu-t4-0")
        await expect(t4.locator(".crater-cell.crater-free")).to_have_count(7)
        await expect(page.locator('[data-summary="t4"] [data-queued="t4"]')).to_have_text("0")
        note = page.locator("#crater-gpus-note")
        if await note.is_visible():  # this hub may run without Prometheus
            await expect(note).to_contain_text("utilization unavailable: ")
        await page.screenshot(path=str(artifacts / "gpu-heatmap.png"), full_page=True)

        # filters redraw in place (no reload) and land in the URL
        await page.select_option("#crater-filter-accelerator", "a100")
        await expect(page.locator('[data-accelerator-grid="t4"]')).to_have_count(0, timeout=PAGE_DEADLINE_MS)
        await expect(page.locator('[data-accelerator-grid="a100"] .crater-cell')).not_to_have_count(0)
        assert await page.evaluate("window.craterNotReloaded === true")
        assert "accelerator=a100" in page.url
        await page.select_option("#crater-filter-accelerator", "")
        await page.fill("#crater-filter-node", "t4")
        await expect(page.locator("[data-node-row]")).to_have_count(1, timeout=PAGE_DEADLINE_MS)
        await page.check("#crater-filter-idle")
        await expect(page.locator(".crater-cell")).to_have_count(0, timeout=PAGE_DEADLINE_MS)
        await expect(page.locator("#crater-gpus-grid")).to_contain_text("No GPUs match these filters")
        await expect(page.locator("#crater-nodes-link")).to_have_count(0)  # admins only

        # an admin's node load view: the server among gpu-t4-0's pods, with what it holds
        admin_context, admin = await log_in(browser, hub, "admin")
        try:
            await admin.goto("/hub/crater/gpus")
            await admin.click("#crater-nodes-link")
            await admin.select_option("#crater-nodes-kind", "server")
            await admin.fill("#crater-nodes-node", "t4")
            node = admin.locator('section[data-node="gpu-t4-0"]')
            await expect(admin.locator("section[data-node]")).to_have_count(1, timeout=PAGE_DEADLINE_MS)
            server = node.locator('tr[data-kind="server"]')
            await expect(server).to_contain_text(name)
            await expect(server.locator("[data-holds]")).to_contain_text("nvidia.com/gpu 1")
            await admin.screenshot(path=str(artifacts / "node-load.png"), full_page=True)
        finally:
            await admin_context.close()
    finally:
        await context.close()
        await stop_server(hub, name)
