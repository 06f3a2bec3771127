"""In a real browser (Debian Chromium): Save image on the home page, the progress to the end, and
the image offered in the spawn form's image choice."""

import time

from tests.browser.conftest import browser  # noqa: F401 (fixture)
from tests.browser.test_spawn_page import log_in
from tests.e2e.hub import spawn, stop_all_servers
from tests.helpers import wait_for


async def test_save_image_on_the_home_page_then_start_from_it(images_hub, browser, registry):  # noqa: F811
    name = f"browser-img-{int(time.time() * 1000) % 100000}"
    context, page = await log_in(browser, images_hub, name)
    try:
        await spawn(images_hub, name, {"profile": "cpu"})
        await page.goto("/hub/home")
        note = await page.inner_text("[data-crater-note]")
        assert "not part of the image" in note
        await page.click("#crater-save-default")
        await page.fill("#crater-image-name", "browser-env")
        await page.fill("#crater-image-tag", "v2")
        await page.click("#crater-save-submit")
        state = page.locator("[data-crater-state]")
        await wait_for(lambda: state.get_attribute("data-state"), timeout=60, message="a commit state")
        await wait_for(lambda: _ended(state), timeout=120, message="the commit to end")
        text = await state.inner_text()
        reference = f"{registry.host}/crater/{name}/browser-env:v2"
        assert await state.get_attribute("data-state") == "succeeded", text
        assert reference in text and "sha256:" in text
        assert await page.inner_text(".progress-bar") == "100%"

        # the library page lists it; the spawn form offers it
        await page.goto("/hub/crater/images")
        await page.wait_for_selector(f'#crater-library tr[data-image="{reference}"]')
        await stop_all_servers(images_hub, name)
        await page.goto("/hub/spawn")
        await page.wait_for_selector("#crater-spawn")
        options = await page.locator("select[name='profile-option-cpu--image'] option").evaluate_all(
            "os => os.map(o => [o.value, o.textContent])")
        assert [reference, "browser-env:v2 (mine)"] in [[v, t.strip()] for v, t in options], options
    finally:
        await context.close()
        await stop_all_servers(images_hub, name)


async def _ended(state):
    return await state.get_attribute("data-state") in ("succeeded", "failed")
