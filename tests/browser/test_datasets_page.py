"""Datasets in a real browser, on the real hub and localkube: a researcher creates a dataset on
the datasets page and shares it with a group through the picker; a member picks it in the spawn
form's multi-select and their server mounts it read-only; the owner's page says where it is
mounted, refuses to delete it while it is, and unshares it."""

import pytest
from playwright.async_api import expect

from ..e2e.hub import api_request, stop_all_servers
from .test_spawn_page import log_in, open_spawn_form, until_lab_or_failure

PAGE_DEADLINE_MS = 15_000


@pytest.fixture
async def pages(crater_hub, browser, artifacts, request):
    owner, member, group = "ds-owner", "ds-member", "ds-team"
    for name in (owner, member):
        r = await api_request(crater_hub, f"users/{name}", "POST")
        assert r.code in (201, 409), r
    r = await api_request(crater_hub, f"groups/{group}", "POST")
    assert r.code in (201, 409), r
    r = await api_request(crater_hub, f"groups/{group}/users", "POST", {"users": [member]})
    assert r.code == 200, r
    owner_context, owner_page = await log_in(browser, crater_hub, owner)
    member_context, member_page = await log_in(browser, crater_hub, member)
    owner_page.on("dialog", lambda dialog: dialog.accept())
    yield owner_page, member_page, owner, member, group
    for page, who in ((owner_page, "owner"), (member_page, "member")):
        await page.screenshot(path=str(artifacts / f"{request.node.name}-{who}.png"), full_page=True)
    await owner_context.close()
    await member_context.close()
    await stop_all_servers(crater_hub, member)
    await api_request(crater_hub, f"crater/datasets/{owner}/shelf", "DELETE")


async def test_create_share_and_mount_a_dataset_from_the_pages(crater_hub, pages, core):  # noqa: F811
    page, member_page, owner, member, group = pages
    await page.goto("/hub/home")
    await page.locator("#crater-nav-datasets").click()
    await expect(page.locator("#crater-datasets")).to_be_visible()

    # create
    await page.fill("#crater-new-name", "shelf")
    await page.fill("#crater-new-description", "books for the team")
    await page.click("#crater-create")
    row = page.locator(f'#crater-datasets-mine tr[data-crater-ref="{owner}/shelf"]')
    await expect(row).to_contain_text("books for the team", timeout=PAGE_DEADLINE_MS)
    await expect(row).to_contain_text("read-only")

    # share with a group through the picker
    await row.locator(".crater-share-kind").select_option("group")
    await row.locator(".crater-share-name").fill(group)
    await row.locator(".crater-share-add").click()
    await expect(row).to_contain_text(f"group {group}", timeout=PAGE_DEADLINE_MS)

    # the member sees it shared with them and picks it in the spawn form
    await member_page.goto("/hub/crater/datasets")
    shared = member_page.locator(f'#crater-datasets-shared tr[data-crater-ref="{owner}/shelf"]')
    await expect(shared).to_be_visible(timeout=PAGE_DEADLINE_MS)
    await open_spawn_form(member_page)
    await member_page.select_option("#crater-datasets-select", [f"{owner}/shelf", "demo-iris"])
    await member_page.click("#spawn_form button[type=submit]")
    await until_lab_or_failure(member_page, crater_hub, member)
    pod = await core.read_namespaced_pod(f"jupyter-{member}", "default")
    mounts = {m.mount_path: m for m in pod.spec.containers[0].volume_mounts}
    assert mounts["/datasets/shelf"].read_only and mounts["/datasets/shelf"].sub_path == f"users/{owner}/shelf"
    assert mounts["/datasets/demo-iris"].read_only

    # the owner's page says where it is mounted, and refuses to delete it
    await page.reload()
    row = page.locator(f'#crater-datasets-mine tr[data-crater-ref="{owner}/shelf"]')
    await expect(row).to_contain_text(f"jupyter-{member}", timeout=PAGE_DEADLINE_MS)
    await row.locator("[data-crater-delete]").click()
    await expect(page.locator("[data-crater-error]")).to_contain_text(
        "is mounted in", timeout=PAGE_DEADLINE_MS)
    await expect(row).to_be_visible()

    # unshare
    await row.locator(f'[data-crater-unshare="group:{group}"]').click()
    await expect(row.locator(f'[data-crater-unshare="group:{group}"]')).to_have_count(
        0, timeout=PAGE_DEADLINE_MS)
    r = await api_request(crater_hub, f"crater/datasets/{owner}/shelf")
    assert r.code == 200 and r.data["shares"] == {"users": [], "groups": []}, r


async def test_a_member_creates_and_deletes_a_group_dataset_from_the_page(crater_hub, pages):
    page, member_page, owner, member, group = pages
    ref = f"@{group}/notes"
    await api_request(crater_hub, f"crater/datasets/{ref}", "DELETE")  # a rerun starts clean
    member_page.on("dialog", lambda dialog: dialog.accept())
    await member_page.goto("/hub/crater/datasets")
    await expect(member_page.locator("#crater-datasets")).to_contain_text("-groups/<group>")
    await member_page.fill("#crater-new-name", "notes")
    await member_page.select_option("#crater-new-space", f"group:{group}")
    await member_page.click("#crater-create")
    row = member_page.locator(f'#crater-datasets-groups tr[data-crater-ref="{ref}"]')
    await expect(row).to_contain_text(f"@{group}", timeout=PAGE_DEADLINE_MS)
    r = await api_request(crater_hub, f"crater/datasets/{ref}")
    assert r.code == 200 and r.data["path"] == f"groups/{group}/notes", r

    # not a member: no "my groups" section, and the dataset is nowhere on the page
    await page.goto("/hub/crater/datasets")
    await expect(page.locator("#crater-datasets-mine")).to_be_attached()
    await expect(page.locator("#crater-datasets-groups")).to_have_count(0)
    await expect(page.locator(f'tr[data-crater-ref="{ref}"]')).to_have_count(0)

    await row.locator("[data-crater-delete]").click()
    await expect(row).to_have_count(0, timeout=PAGE_DEADLINE_MS)
    assert (await api_request(crater_hub, f"crater/datasets/{ref}")).code == 404
