"""What a researcher sees of a job that waits, of the time limit and of a job that is not
theirs, in a real browser on the real hub and localkube (issue 10, item 7): the reason a queued job
waits, on the list and on its page; the time limit in whole minutes in the form and its errors,
the default shown; the command as typed; a job page answering 404 says so once and stops."""

import itertools
import re

import pytest
from playwright.async_api import expect

from ..e2e.hub import api_request
from ..helpers import wait_for
from .test_jobs_page import PAGE_DEADLINE_MS, RUN_DEADLINE_MS, accept_dialogs, cancel_leftovers, row
from .test_spawn_page import log_in

_users = itertools.count(1)


@pytest.fixture
async def researcher(crater_hub, browser, artifacts, request):
    """A page logged in as a fresh researcher, and a token of theirs for the API."""
    name = f"waiting-user-{next(_users)}"
    context, page = await log_in(browser, crater_hub, name)
    accept_dialogs(page)
    r = await api_request(crater_hub, f"users/{name}/tokens", "POST", {"note": "browser test"})
    assert r.code == 201, r
    page.crater_token = r.data["token"]
    yield page
    await page.screenshot(path=str(artifacts / f"{request.node.name}.png"), full_page=True)
    await context.close()
    await cancel_leftovers(crater_hub, name)


async def _submit(hub, token, **body):
    r = await api_request(hub, "crater/jobs", "POST", body, token=token)
    assert r.code == 201, r
    return r.data


async def test_a_waiting_jobs_reason_shows_on_the_list_and_on_its_page(crater_hub, researcher):
    page, token = researcher, researcher.crater_token
    # the demo quota is 4 GPUs: a running 4 × T4 job holds it, so a 1 × T4 job waits for it
    holder = await _submit(crater_hub, token, profile="gpu", accelerator="t4", gpus=4,
                           command="sleep 600", name="holder")

    async def running():
        r = await api_request(crater_hub, f"crater/jobs/{holder['id']}", token=token)
        return r.data["state"] == "running"

    await wait_for(running, timeout=RUN_DEADLINE_MS / 1000, interval=0.2, message="the holder to run")
    waiting = await _submit(crater_hub, token, profile="gpu", accelerator="t4", gpus=1,
                            command="echo never", name="waiter")
    reason = re.compile(r"over quota: 1 more GPU would exceed your GPU quota: 4 of 4 in use")

    await page.goto("/hub/crater/jobs")
    listed = row(page, waiting["id"]).locator("[data-field=state]")
    await expect(listed.locator(".badge")).to_have_text("queued")
    await expect(listed.locator("[data-waiting]")).to_have_text(reason, timeout=PAGE_DEADLINE_MS)
    await expect(row(page, holder["id"]).locator("[data-waiting]")).to_have_count(0)

    await row(page, waiting["id"]).get_by_role("link", name=str(waiting["id"])).click()
    await expect(page.locator("#crater-job-state")).to_have_text("queued")
    await expect(page.locator("#crater-job-waiting")).to_be_visible()
    await expect(page.locator("#crater-job-waiting")).to_have_text(re.compile(r"^Waiting: over quota: "))
    await expect(page.locator("#crater-job-waiting")).to_contain_text(reason)
    await expect(page.locator('[data-detail="waiting"]')).to_contain_text(reason)

    # once it no longer waits, the page says so without a reload
    await api_request(crater_hub, f"crater/jobs/{holder['id']}", "DELETE", token=token)
    await expect(page.locator("#crater-job-state")).to_have_text(
        re.compile("admitted|running|succeeded"), timeout=RUN_DEADLINE_MS)
    await expect(page.locator("#crater-job-waiting")).to_be_hidden()


async def test_the_time_limit_is_whole_minutes_with_the_default_shown(crater_hub, researcher):
    page, token = researcher, researcher.crater_token
    await page.goto("/hub/crater/jobs")
    await expect(page.locator("#crater-job-profile option")).not_to_have_count(0)
    limit = page.locator("#crater-job-max-runtime")
    # the demo's job_default_runtime is 86400 s, its job_max_runtime 604800 s
    await expect(limit).to_have_attribute("placeholder", "1440")
    await expect(page.locator("#crater-job-max-runtime-help")).to_have_text(
        re.compile(r"Whole minutes;\s+default 1440, at most 10080\."))
    command = """echo "two words" 'single quoted' $HOME"""
    await page.fill("#crater-job-command", command)
    error = page.locator("#crater-submit-error")
    for wrong in ("0.5", "0", "10081", "ten"):
        await limit.fill(wrong)
        await page.click("#crater-job-submit")
        await expect(error).to_have_text(
            "Time limit: enter a whole number of minutes from 1 to 10080, or leave it empty for "
            f"the default (1440 min); got {wrong}.")
        assert "second" not in await error.text_content()
    r = await api_request(crater_hub, "crater/jobs", token=token)
    assert r.data["jobs"] == []  # nothing was sent

    await limit.fill("2")
    await page.click("#crater-job-submit")
    submitted = page.locator("[data-submitted-job]")
    await expect(submitted).to_be_visible(timeout=PAGE_DEADLINE_MS)
    await expect(error).to_be_hidden()
    job_id = int(await submitted.get_attribute("data-submitted-job"))
    r = await api_request(crater_hub, f"crater/jobs/{job_id}", token=token)
    assert r.data["max_runtime"] == 120  # the REST field stays in seconds

    await submitted.click()
    await expect(page.locator('[data-detail="time-limit"]')).to_have_text("2 min")
    await expect(page.locator('[data-detail="command"]')).to_have_text(command)  # as typed


async def test_a_job_page_that_answers_404_says_so_once_and_stops(crater_hub, researcher):
    page = researcher
    other = await api_request(crater_hub, "users/someone-else", "POST")
    assert other.code in (201, 409)
    r = await api_request(crater_hub, "users/someone-else/tokens", "POST", {"note": "browser test"})
    theirs = await _submit(crater_hub, r.data["token"], profile="cpu", command="true")
    asked = []
    page.on("request", lambda req: asked.append(req.url)
            if re.search(rf"/api/crater/jobs/{theirs['id']}(/|\?|$)", req.url) else None)
    await page.clock.install()
    await page.goto(f"/hub/crater/jobs/{theirs['id']}")

    missing = page.locator("#crater-job-missing")
    await expect(missing).to_have_text(
        f"No job {theirs['id']}: it does not exist, or it is not yours. "
        "This page no longer refreshes.")
    await expect(page.get_by_text(f"No job {theirs['id']}")).to_have_count(1)
    await expect(page.locator("#crater-job-status")).to_be_hidden()
    await expect(page.locator("#crater-job-body")).to_be_hidden()
    await expect(page.locator("#crater-job-cancel")).to_be_hidden()
    assert len(asked) == 1, asked
    # a minute of the page's time: twelve refresh periods, no new request
    await page.clock.run_for(60_000)
    await page.evaluate("1")  # the page has run what those timers started
    assert len(asked) == 1, asked
    await expect(page.get_by_text("retrying")).to_have_count(0)
