"""The heatmap end to end: pods really run on localkube's MIG and time-sliced cluster, its DCGM
exporters are scraped by a real Prometheus, and a real hub answers ``/hub/api/crater/gpus``: a busy
loop's GPU reads high, a sleeping pod's GPU reads 0 % and is marked allocated-but-idle once the
idle window has passed, a MIG instance shows its pinned utilization in its cell; with Prometheus
stopped the answer keeps the allocation and says why utilization is unavailable."""

import asyncio

from tests.e2e.hub import HubProcess, api_request
from tests.helpers import wait_for

from .pods import gpu_pod

IDLE_WINDOW = 3


def held_by(answer, pod):
    found = [d for d in answer["devices"] if any(h["pod"] == pod for h in d["holders"])]
    return found[0] if len(found) == 1 else None


async def test_busy_idle_mig_and_prometheus_stopped(gpu_cluster, prometheus, tmp_path):
    lk, core = gpu_cluster
    await core.create_namespace({"metadata": {"name": "lab"}})
    for pod in (gpu_pod("busy", "gpu-v100-0", command=("sh", "-c", "while :; do :; done")),
                gpu_pod("idle", "gpu-v100-0"),
                gpu_pod("slice", "gpu-a100-mig-0", "nvidia.com/mig-1g.10gb", pin="0.4")):
        await core.create_namespaced_pod("lab", pod)
    prometheus.scrape_localkube(lk)
    hub = HubProcess(tmp_path / "hub", tmp_path / "kubeconfig", extra_args=[
        f"--Crater.prometheus_url={prometheus.url}",
        f"--Crater.prometheus_scrape_interval={prometheus.scrape_interval}",
        f"--Crater.gpu_idle_window={IDLE_WINDOW}", "--Crater.gpu_idle_threshold=0.05"])
    await asyncio.to_thread(hub.start)  # the in-process localkube keeps serving meanwhile
    try:
        async def settled():
            r = await api_request(hub, "crater/gpus")
            assert r.code == 200, r
            busy, idle, mig = (held_by(r.data, p) for p in ("busy", "idle", "slice"))
            ok = (busy and busy["utilization"] is not None and busy["utilization"] >= 0.8
                  and idle and idle["idle"] and mig and mig["utilization"] is not None)
            return r.data if ok else None

        answer = await wait_for(settled, timeout=60, interval=0.5,
                                message="busy high, idle marked idle, the MIG slice measured")
        assert answer["utilization"] == {"available": True, "note": None,
                                         "taken_at": answer["utilization"]["taken_at"]}
        busy, idle, mig = (held_by(answer, p) for p in ("busy", "idle", "slice"))
        assert busy["node"] == idle["node"] == "gpu-v100-0" and busy["slot"] != idle["slot"]
        assert not busy["idle"]
        assert idle["utilization"] < 0.05 and idle["idle_since"] is not None
        assert busy["memory_total"] > 0 and idle["memory_total"] > 0
        # the MIG instance is a cell of its parent GPU 0, with its pinned engine activity
        assert (mig["gpu"], mig["profile"]) == ("0", "1g.10gb") and mig["instance"] is not None
        assert abs(mig["utilization"] - 0.4) < 0.05
        assert all(h["owner"] for d in answer["devices"] for h in d["holders"])
        v100 = next(a for a in answer["accelerators"] if a["slug"] == busy["accelerator"])
        assert v100["idle"] == 1 and v100["idle_gpus"] == 1
        r = await api_request(hub, f"crater/gpus?idle=true&accelerator={busy['accelerator']}")
        assert [d["slot"] for d in r.data["devices"]] == [idle["slot"]]

        await prometheus.stop()

        async def noted():
            r = await api_request(hub, "crater/gpus")
            return r.data if not r.data["utilization"]["available"] else None

        answer = await wait_for(noted, timeout=30, interval=0.5, message="the utilization note")
        assert answer["utilization"]["note"].startswith(
            f"utilization unavailable: Prometheus at {prometheus.url} unreachable")
        # allocation stays: every held device still names its holder
        assert {h["pod"] for d in answer["devices"] for h in d["holders"]} == {"busy", "idle", "slice"}
        assert all(d["utilization"] is None and not d["idle"] for d in answer["devices"])
    finally:
        await asyncio.to_thread(hub.stop)
