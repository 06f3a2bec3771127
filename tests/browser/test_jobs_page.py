"""A researcher's batch jobs in a real browser, on the real hub and localkube: the navigation bar
leads to the jobs page, its form (filled from the profiles API) submits a job, the table follows it
through the queue to its end without a reload, the job page shows its output while it runs and
after, and cancels it; an administrator sees every user's jobs and queues and cancels them."""

import itertools
import re

import pytest
from playwright.async_api import expect

from ..e2e.hub import api_request
from ..helpers import wait_for
from .test_spawn_page import log_in

RUN_DEADLINE_MS = 120_000  # queue, pod start, a short program, the page's 5 s refresh
PAGE_DEADLINE_MS = 15_000
_users = itertools.count(1)


def accept_dialogs(page):
    """Confirm the "Cancel job N?" question as a user would."""
    page.on("dialog", lambda dialog: dialog.accept())


async def submit_from_form(page, command, profile="cpu", env=None, name=None):
    """Fill the submit form and send it; the id of the job the page says it submitted."""
    await page.goto("/hub/crater/jobs")
    await expect(page.locator("#crater-job-profile option")).not_to_have_count(0)
    await page.select_option("#crater-job-profile", profile)
    if name:
        await page.fill("#crater-job-name", name)
    await page.fill("#crater-job-command", command)
    for key, value in (env or {}).items():
        await page.click("#crater-job-env-add")
        await page.locator("[name=env-name]").last.fill(key)
        await page.locator("[name=env-value]").last.fill(value)
    await page.click("#crater-job-submit")
    submitted = page.locator("[data-submitted-job]")
    await expect(submitted).to_be_visible(timeout=PAGE_DEADLINE_MS)
    return int(await submitted.get_attribute("data-submitted-job"))


def row(page, job_id):
    return page.locator(f'#crater-jobs-table tr[data-job-id="{job_id}"]')


async def cancel_leftovers(hub, owner):
    """Cancel what a failed test left running (the admin token holds custom:crater:admin)."""
    r = await api_request(hub, "crater/jobs?all=1&state=queued&state=admitted&state=running")
    for job in (r.data or {}).get("jobs", []) if r.code == 200 else []:
        if job["owner"] == owner:
            await api_request(hub, f"crater/jobs/{job['id']}", "DELETE")


@pytest.fixture
async def researcher(crater_hub, browser, artifacts, request):
    """A page logged in as a fresh researcher; its last screenshot is kept in test-artifacts/."""
    name = f"jobs-user-{next(_users)}"
    context, page = await log_in(browser, crater_hub, name)
    accept_dialogs(page)
    page.crater_user = name
    yield page
    await page.screenshot(path=str(artifacts / f"{request.node.name}.png"), full_page=True)
    await context.close()
    await cancel_leftovers(crater_hub, name)


async def test_submit_from_the_form_follow_it_to_the_end_and_read_its_output(crater_hub, researcher):
    page = researcher
    await page.goto("/hub/home")
    nav = page.locator("#thenavbar")
    await expect(nav.get_by_role("link", name="GPUs")).to_have_attribute("href", "/hub/crater/gpus")
    await nav.get_by_role("link", name="Jobs").click()
    await expect(page).to_have_url(re.compile(r"/hub/crater/jobs$"))

    # The form offers what the profiles API offers this user, with live availability.
    await expect(page.locator("#crater-job-profile option")).to_have_text(["CPU only", "GPU"])
    await page.select_option("#crater-job-profile", "gpu")
    await expect(page.locator("#crater-job-accelerator option")).to_have_count(2)
    await expect(page.locator("#crater-job-accelerator option").first).to_contain_text(
        re.compile(r"NVIDIA T4 \(16Gi\) — \d+ / 8 free now"))
    await expect(page.locator("#crater-job-gpus option")).to_have_text(
        ["1", "2", "4", re.compile(r"^8 \(waits: exceeds your remaining GPU quota")])

    program = ("import os, time; print('hello from', os.environ['GREETING'], flush=True); "
               "time.sleep(2); print('goodbye', flush=True)")
    job_id = await submit_from_form(page, f'python -c "{program}"', profile="cpu",
                                    env={"GREETING": "crater"}, name="hello")
    await expect(page.locator("#crater-submit-result")).to_contain_text(f"Submitted job {job_id}:")

    # The table follows the job on its own: queued or running first, succeeded at the end.
    await page.evaluate("window.craterNotReloaded = true")
    await expect(row(page, job_id).locator("[data-field=name]")).to_have_text("hello")
    await expect(row(page, job_id).locator("[data-field=state] .badge")).to_have_text(
        "succeeded", timeout=RUN_DEADLINE_MS)
    assert await page.evaluate("window.craterNotReloaded === true")
    await expect(row(page, job_id).locator("[data-field=duration]")).to_have_text(re.compile(r"\d+s"))
    await expect(row(page, job_id).locator("[data-cancel]")).to_have_count(0)

    # Its page: the outcome, the details, and the output, readable after the pod is gone.
    await row(page, job_id).get_by_role("link", name=str(job_id)).click()
    await expect(page).to_have_url(re.compile(rf"/hub/crater/jobs/{job_id}$"))
    await expect(page.locator("#crater-job-state")).to_have_text("succeeded")
    logs = page.locator("#crater-job-logs")
    await expect(logs).to_contain_text("hello from crater")
    await expect(logs).to_contain_text("goodbye")
    await expect(page.locator('[data-detail="exit-code"]')).to_have_text("0")
    await expect(page.locator('[data-detail="environment"]')).to_have_text("GREETING=crater")
    await expect(page.locator("#crater-job-cancel")).to_be_hidden()


async def test_cancel_a_running_job_from_its_page_while_reading_its_live_output(
        crater_hub, researcher, core):  # noqa: F811
    page = researcher
    program = "import time; print('working', flush=True); time.sleep(600)"
    job_id = await submit_from_form(page, f'python -c "{program}"', name="long")
    await page.click(f'[data-submitted-job="{job_id}"]')

    # The output appears while the job runs: the page follows the log stream.
    await expect(page.locator("#crater-job-state")).to_have_text("running", timeout=RUN_DEADLINE_MS)
    await expect(page.locator("#crater-job-logs")).to_contain_text("working", timeout=PAGE_DEADLINE_MS)
    job = (await api_request(crater_hub, f"crater/jobs/{job_id}")).data
    assert job["state"] == "running" and job["k8s_job"], job

    await page.click("#crater-job-cancel")
    await expect(page.locator("#crater-job-state")).to_have_text("cancelled", timeout=PAGE_DEADLINE_MS)
    await expect(page.locator("#crater-job-cancel")).to_be_hidden()
    assert (await api_request(crater_hub, f"crater/jobs/{job_id}")).data["state"] == "cancelled"

    # ...and its pod stops.
    async def no_running_pod():
        pods = await core.list_pod_for_all_namespaces()
        mine = [p for p in pods.items
                if any(o.name == job["k8s_job"] for o in p.metadata.owner_references or ())]
        return not [p for p in mine if p.status.phase == "Running" and not p.metadata.deletion_timestamp]

    await wait_for(no_running_pod, timeout=60, interval=0.5, message=f"job {job_id}'s pod to stop")


async def test_the_form_shows_the_hubs_refusal_naming_the_field(researcher):
    page = researcher
    await page.goto("/hub/crater/jobs")
    await expect(page.locator("#crater-job-profile option")).not_to_have_count(0)
    await page.fill("#crater-job-command", "true")
    await page.click("#crater-job-env-add")
    await page.locator("[name=env-name]").last.fill("1-NOT-A-NAME")
    await page.click("#crater-job-submit")
    error = page.locator("#crater-submit-error")
    await expect(error).to_be_visible(timeout=PAGE_DEADLINE_MS)
    await expect(error).to_contain_text("env")
    await expect(page.locator("[data-submitted-job]")).to_have_count(0)


async def test_only_crater_admins_see_every_queue_and_may_cancel_others_jobs(
        crater_hub, browser, researcher):
    page = researcher
    owner = page.crater_user
    job_id = await submit_from_form(page, 'python -c "import time; time.sleep(600)"', name="theirs")
    # a researcher has no admin page and no link to it
    await expect(page.locator("#crater-nav-admin-jobs")).to_have_count(0)
    response = await page.goto("/hub/crater/admin/jobs")
    assert response.status == 403

    context, admin = await log_in(browser, crater_hub, "admin")  # Authenticator.admin_users
    accept_dialogs(admin)
    try:
        await admin.goto("/hub/home")
        await admin.locator("#crater-nav-admin-jobs").click()
        await expect(admin).to_have_url(re.compile(r"/hub/crater/admin/jobs$"))
        theirs = row(admin, job_id)
        await expect(theirs.locator("[data-field=owner]")).to_have_text(owner)
        await expect(theirs.locator("[data-field=state] .badge")).to_have_text(
            re.compile("queued|admitted|running"))
        queue = (await api_request(crater_hub, f"crater/jobs/{job_id}")).data["queue"]
        await expect(admin.locator(f'#crater-queues-table tr[data-queue="{queue}"]')).to_be_visible()

        await theirs.locator(f'[data-cancel="{job_id}"]').click()
        # gone from the active view; the filter shows it among the cancelled ones
        await expect(theirs).to_have_count(0, timeout=PAGE_DEADLINE_MS)
        await admin.select_option("#crater-admin-filter", "cancelled")
        await expect(row(admin, job_id).locator("[data-field=state] .badge")).to_have_text(
            "cancelled", timeout=PAGE_DEADLINE_MS)
    finally:
        await context.close()

    # the owner sees it cancelled in their own table
    await page.goto("/hub/crater/jobs")
    await expect(row(page, job_id).locator("[data-field=state] .badge")).to_have_text("cancelled")


async def test_a_queued_job_shows_its_place_in_the_queue_and_is_cancelled_from_the_table(
        crater_hub, researcher):
    page = researcher
    # a running 4 × T4 job holds this user's whole GPU quota (4), so one more T4 waits for it
    r = await api_request(crater_hub, f"users/{page.crater_user}/tokens", "POST", {"note": "test"})
    token = r.data["token"]
    r = await api_request(crater_hub, "crater/jobs", "POST", {
        "profile": "gpu", "accelerator": "t4", "gpus": 4, "command": "sleep 600"}, token=token)
    assert r.code == 201, r
    holder = r.data["id"]

    async def holding():
        model = (await api_request(crater_hub, f"crater/jobs/{holder}", token=token)).data
        return model["state"] == "running"

    await wait_for(holding, timeout=RUN_DEADLINE_MS / 1000, interval=0.2, message="the holder to run")
    await page.goto("/hub/crater/jobs")
    await expect(page.locator("#crater-job-profile option")).not_to_have_count(0)
    await page.select_option("#crater-job-profile", "gpu")
    await page.select_option("#crater-job-accelerator", "t4")
    await page.select_option("#crater-job-gpus", "1")
    await page.fill("#crater-job-command", "nvidia-smi")
    await page.click("#crater-job-submit")
    submitted = page.locator("[data-submitted-job]")
    await expect(submitted).to_be_visible(timeout=PAGE_DEADLINE_MS)
    job_id = int(await submitted.get_attribute("data-submitted-job"))

    job = (await api_request(crater_hub, f"crater/jobs/{job_id}")).data
    assert job["state"] == "queued" and job["position"] is not None, job
    queued = row(page, job_id)
    await expect(queued.locator("[data-field=state] .badge")).to_have_text("queued")
    await expect(queued.locator("[data-field=position]")).to_have_text(str(job["position"]))
    await expect(queued.locator("[data-field=gpus]")).to_have_text("1 × t4")
    await expect(queued.locator("[data-waiting]")).to_contain_text("over quota")
    await expect(page.locator("#crater-submit-result")).to_contain_text(
        f"queued, position {job['position']} in the queue")

    await queued.locator(f'[data-cancel="{job_id}"]').click()
    await expect(queued.locator("[data-field=state] .badge")).to_have_text("cancelled")
    await expect(queued.locator("[data-field=position]")).to_have_text("—")
    assert (await api_request(crater_hub, f"crater/jobs/{job_id}")).data["state"] == "cancelled"
