"""The Ray page in a real browser, on the real hub and localkube with real Ray: a user's
``lifetime: "idle"`` cluster is listed with its state, lifetime and the warning of its idle
deletion; its dashboard link opens the Ray dashboard through the hub; scale and delete work
from the page without a reload; an admin sees it among everyone's.

A hub of its own whose warning time equals its idle time (600 s): the cluster is warned from its
creation and never deleted during the test. One head-only cluster, scaled to one CPU worker.
"""

import os

import pytest
from playwright.async_api import expect

from tests.helpers import wait_for

from ..e2e.conftest import crater_file, install_kuberay_crd
from ..e2e.hub import HubProcess, api_request
from .test_spawn_page import log_in

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="Ray binds wildcard ports: pods need their own network namespace"),
]
pytest.importorskip("ray", reason="the test extra installs ray[default]")

USER = "ray-page-dora"
DEADLINE_MS = 20_000


@pytest.fixture(scope="module")
def warned_hub(e2e_dir, localkube):
    install_kuberay_crd(localkube)
    settings = crater_file(e2e_dir / "ray-page.yaml", ray_idle_timeout=600, ray_idle_warning=600)
    process = HubProcess(e2e_dir / "ray-page-hub", localkube.kubeconfig, slow_spawn_timeout=10,
                         env={"CRATER_CONFIG_FILE": str(settings)}).start()
    yield process
    process.stop()


@pytest.fixture
async def cluster(warned_hub):
    """dora's idle cluster (head only), made through the REST API; deleted after the test."""
    assert (await api_request(warned_hub, f"users/{USER}", "POST")).code in (201, 409)
    token = (await api_request(warned_hub, f"users/{USER}/tokens", "POST", {"note": "t"})).data["token"]
    r = await api_request(warned_hub, "crater/ray/clusters", "POST",
                          {"profile": "cpu", "workers": 0, "lifetime": "idle", "name": "page"}, token)
    assert r.code == 201, r
    name = r.data["name"]

    async def ready():
        got = await api_request(warned_hub, f"crater/ray/clusters/{name}", token=token)
        return got.data if got.data["state"] == "ready" else None

    yield name, token, ready
    await api_request(warned_hub, f"crater/ray/clusters/{name}", "DELETE", token=token)


async def test_the_ray_page_lists_warns_opens_the_dashboard_scales_and_deletes(
        warned_hub, cluster, browser, artifacts):
    name, token, ready = cluster
    context, page = await log_in(browser, warned_hub, USER)
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        await page.locator("#crater-nav-ray").click()
        row = page.locator(f'#crater-ray-clusters tr[data-crater-cluster="{name}"]')
        await expect(row).to_be_visible(timeout=DEADLINE_MS)
        await expect(row.locator('[data-crater-cell="lifetime"]')).to_contain_text("idle")
        badge = row.locator('.crater-ray-expiry[data-crater-warning="true"]')
        await expect(badge).to_contain_text("deleted in", timeout=DEADLINE_MS)
        await expect(badge).to_contain_text("unless used")
        banner = page.locator("#crater-ray-warning")
        await expect(banner).to_be_visible()
        await expect(banner).to_contain_text(f"Ray cluster {name} will be deleted in")

        await wait_for(ready, timeout=240, interval=1, message="the Ray cluster to be ready")
        await expect(row.locator('[data-crater-cell="state"]')).to_have_text("ready", timeout=DEADLINE_MS)
        await expect(row.locator('[data-crater-cell="workers"]')).to_have_text("0 of 0 ready")

        # the dashboard link: the real Ray dashboard's page, through the hub (a new tab)
        async with context.expect_page() as opened:
            await row.locator(".crater-ray-dashboard").click()
        dashboard = await opened.value
        await dashboard.wait_for_load_state()
        assert dashboard.url.endswith(f"/hub/crater/ray/{name}/dashboard/"), dashboard.url
        await expect(dashboard).to_have_title("Ray Dashboard", timeout=DEADLINE_MS)
        await dashboard.close()
        # its JSON API in the browser: the jobs (none yet) and the head's log files
        async with context.expect_page() as opened:
            await row.locator(".crater-ray-jobs").click()
        jobs = await opened.value
        await expect(jobs.locator("body")).to_have_text("[]", timeout=DEADLINE_MS)
        await jobs.close()
        async with context.expect_page() as opened:
            await row.locator(".crater-ray-logs").click()
        logs = await opened.value
        await expect(logs.locator("body")).to_contain_text("raylet.out", timeout=DEADLINE_MS)
        await logs.close()

        # scale to one worker, in place
        await row.locator(".crater-ray-count").fill("1")
        await row.locator(".crater-ray-scale").click()
        await expect(row.locator('[data-crater-cell="workers"]')).to_contain_text(" of 1 ready",
                                                                                 timeout=DEADLINE_MS)
        got = await api_request(warned_hub, f"crater/ray/clusters/{name}", token=token)
        assert got.data["workers"] == 1, got
        await page.screenshot(path=str(artifacts / "ray-page.png"), full_page=True)

        # an admin sees only their own clusters, then everyone's on demand, with the owner named
        admin_context, admin_page = await log_in(browser, warned_hub, "admin")
        try:
            await admin_page.goto("/hub/crater/ray")
            await expect(admin_page.locator("#crater-ray-empty")).to_be_visible(timeout=DEADLINE_MS)
            await admin_page.locator("#crater-ray-all").check()
            theirs = admin_page.locator(f'#crater-ray-clusters tr[data-crater-cluster="{name}"]')
            await expect(theirs.locator('[data-crater-cell="owner"]')).to_have_text(USER, timeout=DEADLINE_MS)
            await expect(theirs.locator('.crater-ray-expiry[data-crater-warning="true"]')).to_be_visible()
            await expect(admin_page.locator("#crater-ray-warning")).to_be_hidden()  # not theirs
        finally:
            await admin_context.close()

        # delete, in place: the row goes, and so does the cluster
        await row.locator(".crater-ray-delete").click()
        await expect(row).to_have_count(0, timeout=60_000)
        await expect(page.locator("#crater-ray-empty")).to_be_visible()
        gone = await api_request(warned_hub, f"crater/ray/clusters/{name}", token=token)
        assert gone.code == 404, gone
    finally:
        await context.close()
