"""The README's first command on a machine with no cluster: ``./dev run`` starts the hub on its
embedded localkube; a browser logs in, starts a server and JupyterLab opens through the proxy.
Stopping the hub takes localkube and the server's process with it (the session's leftover check
in ``e2e_dir`` fails otherwise)."""

import asyncio

from ..contract.conftest import kubectl_binary
from ..e2e.hub import HubProcess, server_of
from ..helpers import wait_for
from .test_spawn_page import log_in, until_lab_or_failure


async def kubectl(kubeconfig, *args):
    proc = await asyncio.create_subprocess_exec(
        kubectl_binary(), "--kubeconfig", str(kubeconfig), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode()


async def test_dev_run_serves_the_platform_on_localkube(e2e_dir, browser, artifacts):
    hub = HubProcess(e2e_dir / "dev-run", kubeconfig=None, slow_spawn_timeout=10).start(timeout=180)
    try:
        context, page = await log_in(browser, hub, "readme-user")
        await page.goto("/hub/spawn")
        await page.wait_for_selector("#crater-spawn")  # the demo profiles of the embedded cluster
        assert await page.is_checked("#crater-cpu")
        # the embedded default's demo dataset, generated at first start
        await page.select_option("#crater-datasets-select", ["demo-iris"])
        await page.click("#spawn_form button[type=submit]")
        await until_lab_or_failure(page, hub, "readme-user")
        await page.wait_for_selector("#jp-main-dock-panel", timeout=120_000)
        await page.screenshot(path=str(artifacts / "dev-run-lab.png"))
        server = await server_of(hub, "readme-user")
        assert server["ready"] and server["state"]["pod_name"] == "jupyter-readme-user", server
        kubeconfig = hub.state_dir / "localkube" / "kubeconfig"

        async def seeded():
            code, out = await kubectl(kubeconfig, "get", "pod", "crater-demo-dataset",
                                      "-o", "jsonpath={.status.phase}")
            return code == 0 and out == "Succeeded"

        await wait_for(seeded, timeout=60, interval=0.5, message="the demo dataset's files")
        code, out = await kubectl(kubeconfig, "exec", "jupyter-readme-user", "--", "sh", "-c",
                                  "ls /datasets/demo-iris && touch /datasets/demo-iris/x")
        assert "iris.csv" in out and "Read-only file system" in out and code != 0, out
        await context.close()
    finally:
        hub.stop()
    assert (hub.state_dir / "localkube").is_dir()  # the embedded cluster's state, in the hub's
