"""The embedded default (``./dev run`` with no cluster configured) runs a real Prometheus with the
hub: it scrapes every localkube node's DCGM exporter and the hub's /hub/metrics every 5 s, the
hub's utilization reads from it, and it stops with the hub."""

import yaml
from tornado.httpclient import AsyncHTTPClient

from crater_hub.gpus.prometheus import Prometheus
from tests.e2e.hub import HubProcess, processes_mentioning
from tests.helpers import wait_for

DEMO_NODES = {"gpu-a100-0", "gpu-t4-0", "cpu-0"}


async def test_embedded_hub_runs_scrapes_with_and_stops_its_prometheus(tmp_path):
    hub = HubProcess(tmp_path / "hub", None)  # nothing configured: localkube and Prometheus embedded
    hub.start(timeout=120)
    data_dir = tmp_path / "hub" / "prometheus"
    try:
        url = (await wait_for(lambda: (data_dir / "url").exists() and (data_dir / "url").read_text(),
                              timeout=30, message="the embedded Prometheus's url file"))
        config = yaml.safe_load((data_dir / "prometheus.yml").read_text())
        assert config["global"]["scrape_interval"] == "5s"
        assert not url.endswith(":9090")
        prom = Prometheus(url)

        async def targets_up():
            try:
                up = await prom.query("up == 1")
            except Exception:
                return None
            jobs = {(r["metric"]["job"], r["metric"]["instance"]) for r in up}
            hub_up = any(job == "jupyterhub" for job, _ in jobs)
            return hub_up and {i for job, i in jobs if job == "dcgm"} == DEMO_NODES
        await wait_for(targets_up, timeout=60, interval=1,
                       message="Prometheus scraping the hub and every node's DCGM exporter")
        # the hub's own series come through its token (the hub still authenticates /hub/metrics)
        assert await prom.query('jupyterhub_total_users{job="jupyterhub"}')
        r = await AsyncHTTPClient().fetch(f"{hub.url}/hub/metrics", raise_error=False)
        assert r.code == 403
        gpus = await prom.query("DCGM_FI_DEV_GPU_UTIL")
        assert len(gpus) == 12  # 4 A100s and 8 T4s of the demo cluster, all idle
        assert {g["metric"]["Hostname"] for g in gpus} == {"gpu-a100-0", "gpu-t4-0"}
        assert (data_dir / "data").is_dir()  # the TSDB under the state directory
    finally:
        hub.stop()
    await wait_for(lambda: not processes_mentioning(str(data_dir)), timeout=30,
                   message="Prometheus stopped with the hub")
