"""GPU accounting against localkube's shared-GPU cluster and a real Prometheus scraping its DCGM
exporters: time-sliced and MIG intervals count their share of a physical GPU and get their pinned
utilization as their mean; an interval whose pod vanished while accounting was down closes at the
pod's last utilization sample, marked estimated.

The caches are real :class:`WatchCache` objects on localkube's API (kubernetes_asyncio over HTTP).
"""

import time
from datetime import datetime, timezone

import pytest

from crater_hub.accelerators import discover
from crater_hub.db.session import Database
from crater_hub.gpus.accounting import Accounting
from crater_hub.gpus.devices import gpu_equivalent
from crater_hub.gpus.workloads import classify, device_requests
from crater_hub.kube.caches import WatchCache
from tests.helpers import wait_for

from .test_accounting import db_url, postgres, rows  # noqa: F401 (fixtures: the same databases)

PIN = "localkube.crater.io/gpu-utilization"


def pod(name, node, resource, count, pin, seconds):
    return {
        "metadata": {"name": name, "annotations": {PIN: pin},
                     "labels": {"crater.io/kind": "job", "crater.io/job-id": name,
                                "crater.io/owner": "ann"}},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "restartPolicy": "Never",
                 "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "work", "image": "busybox:1.36",
                                 "command": ["sleep", str(seconds)],
                                 "resources": {"limits": {resource: str(count)}}}]},
    }


async def accounting_on(core, url, prometheus):
    pods, nodes = WatchCache("pods", api=core), WatchCache("nodes", api=core)
    accounting = Accounting(
        Database(url), pods, nodes, accelerators=lambda: discover(list(nodes)),
        groups_of=lambda user: [], prometheus=prometheus.client, classify=classify,
        device_requests=device_requests, gpu_equivalent=gpu_equivalent)
    await accounting.start()
    return accounting


async def stop(accounting):
    await accounting.stop()
    await accounting.pod_cache.stop()
    await accounting.node_cache.stop()


def closed(accounting, count):
    done = [r for r in rows(accounting) if r.end is not None]
    return done if len(done) >= count else None


async def test_time_sliced_and_mig_intervals_with_their_utilization(gpu_cluster, prometheus, db_url):  # noqa: F811
    lk, core = gpu_cluster
    prometheus.scrape_localkube(lk)
    accounting = await accounting_on(core, db_url, prometheus)
    try:
        await core.create_namespaced_pod("default", pod("shared", "gpu-t4-ts-0", "nvidia.com/gpu", 2, "0.9", 12))
        await core.create_namespaced_pod("default", pod("slice", "gpu-a100-mig-0", "nvidia.com/mig-1g.10gb", 1, "0.4", 12))
        done = await wait_for(lambda: closed(accounting, 2), timeout=60, interval=0.2,
                              message="both intervals to close")
    finally:
        await stop(accounting)
    by_pod = {r.pod_name: r for r in done}
    shared, mig = by_pod["shared"], by_pod["slice"]
    assert (shared.count, shared.gpu_equivalent, shared.accelerator) == (2, 0.25, "t4-shared")
    assert mig.gpu_equivalent == pytest.approx(1 / 7) and mig.resource == "nvidia.com/mig-1g.10gb"
    # Kubernetes writes startedAt/finishedAt in whole seconds: a `sleep 12` that ran 12.3 s from
    # 10:00:04.8 to 10:00:17.1 reads 10:00:04 to 10:00:17, 13 s; the interval is the pod's own times
    assert 12 <= (shared.end - shared.start).total_seconds() <= 13
    assert shared.utilization == pytest.approx(0.9, abs=0.05)
    assert mig.utilization == pytest.approx(0.4, abs=0.05)
    assert shared.kind == "job" and shared.user == "ann" and not shared.end_estimated


async def test_a_pod_gone_while_accounting_was_down_closes_at_its_last_sample(gpu_cluster, prometheus, db_url):  # noqa: F811
    lk, core = gpu_cluster
    prometheus.scrape_localkube(lk)
    first = await accounting_on(core, db_url, prometheus)
    try:
        await core.create_namespaced_pod("default", pod("gone", "gpu-v100-0", "nvidia.com/gpu", 1, "0.5", 300))
        await wait_for(lambda: rows(first), timeout=30, interval=0.2, message="the interval to open")
        await prometheus.wait_for('DCGM_FI_DEV_GPU_UTIL{pod="gone"}', timeout=30)
    finally:
        await stop(first)
    await core.delete_namespaced_pod("gone", "default", grace_period_seconds=0)
    deleted = time.time()
    # the series goes stale in Prometheus; accounting restarts clearly later
    async def stale():
        return not await prometheus.query('DCGM_FI_DEV_GPU_UTIL{pod="gone"}')

    await wait_for(stale, timeout=30, interval=0.25, message="the gone pod's series to go stale")
    await wait_for(lambda: time.time() > deleted + 3, timeout=10, interval=0.1)
    second = await accounting_on(core, db_url, prometheus)
    try:
        (row,) = rows(second)
    finally:
        await stop(second)
    end = row.end.replace(tzinfo=timezone.utc).timestamp()
    assert row.end_estimated
    assert deleted - 3 <= end <= deleted + 2, (row.end, datetime.fromtimestamp(deleted, timezone.utc))
    assert row.utilization == pytest.approx(0.5, abs=0.05)
