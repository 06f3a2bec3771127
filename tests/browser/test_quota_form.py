"""Quotas in the spawn form: what is over quota is disabled with the reason, and a forged form
submission (the disabled choice re-enabled in the page) is refused by the hub with the same
rule the REST API applies, leaving nothing started."""

from ..e2e.hub import api_request, server_of, spawn, stop_all_servers
from ..helpers import wait_for
from .test_spawn_page import log_in

QUOTA_GPUS = 4  # demo-crater.yaml: quotas.default.gpus


async def test_form_refuses_a_named_server_over_the_gpu_quota(crater_hub, browser, artifacts):
    hub, name = crater_hub, "browser-quota"
    context, page = await log_in(browser, hub, name)  # DummyAuthenticator creates the user
    try:
        await spawn(hub, name, {"profile": "gpu", "accelerator": "t4", "gpus": QUOTA_GPUS})

        await page.goto(f"/hub/spawn/{name}/second")
        await page.wait_for_selector("#crater-spawn")
        assert "Your remaining quota: 0 GPUs, 2 servers." in await page.inner_text("#crater-quota")
        await page.check("#crater-gpu")
        await page.select_option("#crater-gpu-accelerator", "t4")
        one = page.locator('#crater-gpu-gpus-t4 option[value="1"]')
        assert await one.is_disabled()
        assert await one.text_content() == "1 — exceeds your remaining GPU quota (0)"

        # What a hand-made request would send: the disabled choice, enabled and submitted.
        await page.eval_on_selector('#crater-gpu-gpus-t4 option[value="1"]', "o => { o.disabled = false; }")
        await page.select_option("#crater-gpu-gpus-t4", "1")
        await page.click("#spawn_form button[type=submit]")
        error = page.locator(".spawn-error-msg")
        await error.wait_for()
        assert " ".join((await error.inner_text()).split()) == (
            "Error: Over quota: 1 more GPU would exceed your GPU quota: 4 of 4 in use, 0 left.")
        # The form shown again still counts the running server, also after its live refresh.
        quota = page.locator("#crater-quota")
        assert "Your remaining quota: 0 GPUs, 2 servers." in await quota.inner_text()
        await page.wait_for_function(
            "Number(document.querySelector('#crater-spawn').dataset.refreshes) >= 1", timeout=30_000)
        assert "Your remaining quota: 0 GPUs, 2 servers." in await quota.inner_text()
        await page.screenshot(path=str(artifacts / "spawn-over-quota.png"), full_page=True)
        assert await server_of(hub, name, "second") is None

        async def no_record_left():  # the refused new server is not kept as a stopped one
            r = await api_request(hub, f"users/{name}?include_stopped_servers=1")
            return "second" not in r.data["servers"]

        await wait_for(no_record_left, timeout=10, message="the refused server's record to go")
        # logged as one line: JupyterHub's form handler would add the refusal's traceback
        log = hub.log_file.read_text(errors="replace").splitlines()
        at = [i for i, line in enumerate(log)
              if "Failed to spawn single-user server with form: Over quota" in line]
        assert at and all(not log[i + 1].startswith("Traceback") for i in at if i + 1 < len(log))
    finally:
        await context.close()
        await stop_all_servers(hub, name)
        await api_request(hub, f"users/{name}", "DELETE")
