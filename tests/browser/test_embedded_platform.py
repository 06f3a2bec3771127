"""The README's first command on a machine with no cluster: ``./dev run`` starts the hub on its
embedded localkube; a browser logs in, starts a server and JupyterLab opens through the proxy.
Stopping the hub takes localkube and the server's process with it (the session's leftover check
in ``e2e_dir`` fails otherwise)."""

from ..e2e.hub import HubProcess, server_of
from .test_spawn_page import log_in, until_lab_or_failure


async def test_dev_run_serves_the_platform_on_localkube(e2e_dir, browser, artifacts):
    hub = HubProcess(e2e_dir / "dev-run", kubeconfig=None, slow_spawn_timeout=10).start(timeout=180)
    try:
        context, page = await log_in(browser, hub, "readme-user")
        await page.goto("/hub/spawn")
        await page.wait_for_selector("#crater-spawn")  # the demo profiles of the embedded cluster
        assert await page.is_checked("#crater-cpu")
        await page.click("#spawn_form button[type=submit]")
        await until_lab_or_failure(page, hub, "readme-user")
        await page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
        await page.screenshot(path=str(artifacts / "dev-run-lab.png"))
        server = await server_of(hub, "readme-user")
        assert server["ready"] and server["state"]["pod_name"] == "jupyter-readme-user", server
        await context.close()
    finally:
        hub.stop()
    assert (hub.state_dir / "localkube").is_dir()  # the embedded cluster's state, in the hub's
