"""A researcher in a real browser: the spawn page shows live GPU availability that matches the
API, disables what they cannot have and says why, keeps itself current without a reload, and
starts the profile they pick. Also the two REST endpoints the page is built on."""

import re

from ..e2e.hub import api_request, request, server_of, stop_server
from ..helpers import wait_for

PASSWORD = "crater"  # jupyterhub_config.py's DummyAuthenticator password (CRATER_DEMO_PASSWORD)
SPAWN_DEADLINE_S = 120
REFRESH_DEADLINE_S = 30  # the form polls every 10 s


async def log_in(browser, hub, name):
    """A browser context logged in as ``name`` (DummyAuthenticator creates the user)."""
    context = await browser.new_context(base_url=hub.url, viewport={"width": 1280, "height": 1000})
    page = await context.new_page()
    await page.goto("/hub/login")
    await page.fill("#username_input", name)
    await page.fill("#password_input", PASSWORD)
    await page.click("#login_submit")
    await page.wait_for_url(re.compile(r"/hub/(home|spawn)"))
    return context, page


async def open_spawn_form(page):
    await page.goto("/hub/spawn")
    await page.wait_for_selector("#crater-spawn")


async def until_lab_or_failure(page, hub, name):
    """Follow the spawn-pending page until JupyterLab's URL, or fail with what the page says.

    Failures show as a refusal on the form (``.spawn-error-msg``), a red progress bar, or the
    "Spawn failed" page.
    """
    lab = re.compile(rf"/user/{name}/lab")
    failed = page.locator("#progress-bar.bg-danger, .spawn-error-msg, h1:has-text('Spawn failed')")

    async def settled():
        return lab.search(page.url) or await failed.count()

    await wait_for(settled, timeout=SPAWN_DEADLINE_S, interval=0.25, message=f"{name}'s server")
    if not lab.search(page.url):
        shown = " ".join((await page.inner_text("body")).split())
        why = [line for line in hub.log_file.read_text(errors="replace").splitlines()
               if name in line and re.search(r"(?i)error|fail", line)]
        raise AssertionError(f"the spawn failed; the page says: {shown[:600]}\n"
                             f"the hub says:\n" + "\n".join(why[-5:]))


async def availability_on(page, free_attr, total_attr):
    """``{slug: (free, total)}`` as the page shows them."""
    shown = {}
    for free in await page.query_selector_all(f"[{free_attr}]"):
        slug = await free.get_attribute(free_attr)
        total = await page.text_content(f'[{total_attr}="{slug}"]')
        shown[slug] = (int(await free.text_content()), int(total))
    return shown


async def capacity_now(hub):
    r = await api_request(hub, "crater/capacity")
    assert r.code == 200, r
    return {a["slug"]: (a["free"], a["total"]) for a in r.data["accelerators"]}


async def test_spawn_page_shows_live_capacity_and_starts_a_t4_server(crater_hub, browser, artifacts):
    hub, ada, bob = crater_hub, "browser-ada", "browser-bob"
    (artifacts / "spawn-failure.png").unlink(missing_ok=True)
    ada_context, page = await log_in(browser, hub, ada)
    bob_context, watcher = await log_in(browser, hub, bob)
    try:
        await open_spawn_form(page)
        # The numbers on the page are the API's.
        shown = await availability_on(page, "data-crater-free", "data-crater-total")
        assert set(shown) == {"t4", "a100"}, shown
        assert shown == await capacity_now(hub)

        # Only the profiles this user may use; what they cannot have is disabled, with the reason.
        profiles = await page.eval_on_selector_all("input[name=profile]", "els => els.map(e => e.value)")
        assert profiles == ["cpu", "gpu"]  # "a100-staff" is for ml-staff only
        assert await page.is_checked("#crater-cpu")  # the default profile
        eight = page.locator('#crater-gpu-gpus-t4 option[value="8"]')
        assert await eight.is_disabled()
        assert await eight.text_content() == "8 — exceeds your remaining GPU quota (4)"
        assert "Your remaining quota: 4 GPUs, 3 servers." in await page.inner_text("#crater-quota")
        await page.screenshot(path=str(artifacts / "spawn-form.png"), full_page=True)

        # Bob keeps the form open; it must follow the cluster without a reload.
        await open_spawn_form(watcher)
        await watcher.evaluate("window.craterNotReloaded = true")

        # Ada picks GPU, T4 × 1, and starts.
        await page.check("#crater-gpu")
        await page.select_option("#crater-gpu-accelerator", "t4")
        await page.select_option("#crater-gpu-gpus-t4", "1")
        await page.click("#spawn_form button[type=submit]")
        await until_lab_or_failure(page, hub, ada)
        await page.wait_for_selector("#jp-main-dock-panel", timeout=SPAWN_DEADLINE_S * 1000)
        await page.screenshot(path=str(artifacts / "spawn-page.png"))

        server = await server_of(hub, ada)
        assert server["ready"] and server["user_options"] == {
            "profile": "gpu", "accelerator": "t4", "gpus": "1"}, server

        # The T4 Ada holds is no longer free: in the API, in Bob's open form, on the GPU page.
        async def one_t4_taken():
            now = await capacity_now(hub)
            return now if now["t4"][0] == shown["t4"][0] - 1 else None

        taken = await wait_for(one_t4_taken, timeout=30, message="the T4 to count as in use")

        async def bob_sees_it():
            return await availability_on(watcher, "data-crater-free", "data-crater-total") == taken

        await wait_for(bob_sees_it, timeout=REFRESH_DEADLINE_S, interval=0.5,
                       message="Bob's open form to show the T4 in use")
        assert await watcher.evaluate("window.craterNotReloaded === true")
        t4 = await watcher.text_content('#crater-gpu-accelerator option[value="t4"]')
        assert t4 == f"NVIDIA T4 (16Gi) — {taken['t4'][0]} / {taken['t4'][1]} free"
        assert await watcher.text_content("[data-crater-error]") == ""

        await page.goto("/hub/crater/gpus")
        await page.wait_for_selector('[data-free="t4"]')
        assert await availability_on(page, "data-free", "data-total") == taken
        await page.screenshot(path=str(artifacts / "gpus-page.png"), full_page=True)
    except Exception:
        await page.screenshot(path=str(artifacts / "spawn-failure.png"), full_page=True)
        raise
    finally:
        await ada_context.close()
        await bob_context.close()
        for name in (ada, bob):
            if (await api_request(hub, f"users/{name}")).code == 200:
                await stop_server(hub, name)


async def user_token(hub, name, scopes=None):
    await api_request(hub, f"users/{name}", "POST")  # 201, or 409 when it exists
    body = {"note": "crater api test", **({"scopes": scopes} if scopes is not None else {})}
    r = await api_request(hub, f"users/{name}/tokens", "POST", body)
    assert r.code == 201, r
    return r.data["token"]


async def test_profiles_api_is_what_this_user_may_start(crater_hub):
    hub = crater_hub
    r = await request(f"{hub.api_url}crater/profiles", token=await user_token(hub, "api-cy"))
    assert r.code == 200, r
    assert [p["slug"] for p in r.data["profiles"]] == ["cpu", "gpu"]
    assert r.data["quota"] == {"servers": 3, "gpus": 4, "accelerators": {}}
    gpu = r.data["profiles"][1]
    assert [(a["slug"], [c["count"] for c in a["counts"]]) for a in gpu["accelerators"]] == [
        ("t4", [1, 2, 4, 8]), ("a100", [1, 2, 4])]

    token = await user_token(hub, "api-dee")
    r = await api_request(hub, "groups/ml-staff", "POST", {"users": ["api-dee"]})
    assert r.code == 201, r
    r = await request(f"{hub.api_url}crater/profiles", token=token)
    assert [p["slug"] for p in r.data["profiles"]] == ["cpu", "gpu", "a100-staff"]


async def test_crater_api_needs_the_crater_use_scope(crater_hub):
    hub = crater_hub
    token = await user_token(hub, "api-eve", scopes=["read:users:name!user"])
    for path in ("crater/capacity", "crater/profiles"):
        r = await request(f"{hub.api_url}{path}", token=token)
        assert r.code == 403, r
        assert r.data["status"] == 403 and "custom:crater:use" in r.data["message"], r.data
