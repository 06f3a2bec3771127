"""My usage in a real browser: after a GPU job ran, the page's plot exists and has data points
(an SVG bar for today), the numbers match the REST report, and the job page's utilization
timeline says it is unavailable when Prometheus is not configured."""

import pytest
from playwright.async_api import expect

from ..e2e.hub import api_request
from ..helpers import wait_for
from ..queue.helpers import submit, wait_state
from .test_spawn_page import log_in


@pytest.fixture
async def user_page(crater_hub, browser, artifacts, request):
    context, page = await log_in(browser, crater_hub, "usage-user-1")
    yield page
    await page.screenshot(path=str(artifacts / f"{request.node.name}.png"), full_page=True)
    await context.close()


async def test_my_usage_plot_has_the_jobs_gpu_hours(crater_hub, user_page):
    page = user_page
    r = await api_request(crater_hub, "users/usage-user-1/tokens", "POST", {"note": "usage"})
    token = r.data["token"]
    job = await submit(crater_hub, token, profile="gpu", accelerator="t4", gpus=1, command="sleep 2")
    await wait_state(crater_hub, token, job["id"], "succeeded", timeout=120)

    async def closed():
        r = await api_request(crater_hub, f"crater/usage/timeline?kind=job&name={job['id']}",
                              token=token)
        return r.code == 200 and r.data["intervals"][0]["end"] is not None

    await wait_for(closed, timeout=30, interval=0.2, message="the job's interval to close")
    report = (await api_request(crater_hub, "crater/usage", token=token)).data
    (mine,) = report["rows"]

    await page.goto("/hub/crater/usage")
    plot = page.locator("svg#crater-usage-plot")
    await expect(plot).to_be_visible()
    assert int(await plot.get_attribute("data-points")) >= 1
    bars = plot.locator("rect[data-series]")
    assert await bars.count() >= 1
    values = [float(v) for v in await bars.evaluate_all("rs => rs.map(r => r.dataset.value)")]
    assert sum(values) == pytest.approx(mine["gpu_hours"], abs=1e-5)
    await expect(page.locator('[data-crater-field="gpu_hours"]')).to_have_text(f"{mine['gpu_hours']:.3f}")
    await expect(page.locator("#crater-usage-heaviest")).to_contain_text(str(job["id"]))

    await page.goto(f"/hub/crater/jobs/{job['id']}")
    await expect(page.locator("#crater-job-utilization")).to_contain_text("utilization unavailable")


async def test_admin_report_plot_table_sorts_and_csv_link(crater_hub, browser, artifacts):
    """The admin report (as the hub's admin): a plot with bars, a row per user that sorts by
    GPU-hours, and a CSV link carrying the page's range."""
    context, page = await log_in(browser, crater_hub, "admin")
    try:
        r = await api_request(crater_hub, "users/usage-user-2", "POST")
        assert r.code in (201, 409), r
        token = (await api_request(crater_hub, "users/usage-user-2/tokens", "POST",
                                   {"note": "usage"})).data["token"]
        job = await submit(crater_hub, token, profile="gpu", accelerator="t4", gpus=2,
                           command="sleep 1")
        await wait_state(crater_hub, token, job["id"], "succeeded", timeout=120)

        async def reported():
            r = await api_request(crater_hub, "crater/usage")
            names = {row["name"] for row in r.data["rows"]}
            return r.data if "usage-user-2" in names else None

        report = await wait_for(reported, timeout=30, interval=0.2, message="the report to list the user")
        await page.goto("/hub/crater/admin/usage")
        plot = page.locator("svg#crater-admin-usage-plot")
        await expect(plot).to_be_visible()
        assert await plot.locator("rect[data-series]").count() >= 1
        table = page.locator("#crater-usage-table tbody tr[data-name]")
        await expect(table).to_have_count(len(report["rows"]))
        header = page.locator("#crater-usage-table thead button", has_text="GPU-hours")
        await header.click()
        hours = [float(v) for v in await table.evaluate_all(
            "rs => rs.map(r => r.cells[1].dataset.value)")]
        assert hours == sorted(hours, reverse=True)
        await header.click()
        hours = [float(v) for v in await table.evaluate_all(
            "rs => rs.map(r => r.cells[1].dataset.value)")]
        assert hours == sorted(hours)
        href = await page.locator("#crater-usage-csv").get_attribute("href")
        assert href.startswith("/hub/api/crater/usage?start=") and href.endswith("&by=user&format=csv")
        await page.screenshot(path=str(artifacts / "admin_usage_report.png"), full_page=True)
    finally:
        await context.close()
