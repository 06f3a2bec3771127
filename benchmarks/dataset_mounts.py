"""What datasets cost a spawn and a submit: 5 datasets versus none, on the real hub and localkube.

    .venv/bin/python -m benchmarks.dataset_mounts [-n 5]

Starts localkube and the hub with the demo settings (``demo-crater.yaml``: the shared data
volume and the demo catalog dataset), makes a user with 4 datasets of their own, then, N times
and alternating so that both see the same machine:

- spawn (REST POST to the progress stream's "ready") with no datasets, then with 5 (the 4 and
  the demo): the policy's reference check, one database lookup, 2 more volumes and 5 subPath
  mounts in the pod;
- submit (``POST /hub/api/crater/jobs`` answered) of a job with no datasets, then with 5, each
  cancelled at once.

Then, in this process (no hub): the hub-side work datasets add to each spawn and submit — the
references' database lookup (SQLite, on the worker thread) and the policy's check — timed over
many calls, since on this shared machine the end-to-end times vary far more than that.

Prints medians and the ratios with/without; no pass/fail.
"""

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from crater_hub.config import Crater
from crater_hub.datasets.choices import choices_for
from crater_hub.datasets.store import DatasetStore
from crater_hub.localkube import LocalKubeProcess
from crater_hub.policy import workload
from crater_hub.policy.profiles import parse
from tests.e2e.conftest import DEMO_CRATER
from tests.e2e.hub import HubProcess, api_request, spawn, stop_server

USER = "bench-ds"
OWN = ["bench-a", "bench-b", "bench-c", "bench-d"]


async def timed_submit(hub, token, datasets):
    body = {"command": "true", "name": "bench"}
    if datasets:
        body["datasets"] = datasets
    began = time.monotonic()
    r = await api_request(hub, "crater/jobs", "POST", body, token=token)
    seconds = time.monotonic() - began
    assert r.code == 201, r
    await api_request(hub, f"crater/jobs/{r.data['id']}", "DELETE", token=token)
    return seconds


async def measure(hub, n):
    assert (await api_request(hub, f"users/{USER}", "POST")).code == 201
    token = (await api_request(hub, f"users/{USER}/tokens", "POST", {})).data["token"]
    for name in OWN:
        r = await api_request(hub, "crater/datasets", "POST", {"name": name}, token=token)
        assert r.code == 201, r
    five = [f"{USER}/{name}" for name in OWN] + ["demo-iris"]
    rows = {"spawn": ([], []), "submit": ([], [])}
    for i in range(n):
        for k, datasets in enumerate(([], five)):
            started = await spawn(hub, USER, {"datasets": datasets} if datasets else {})
            rows["spawn"][k].append(started.seconds)
            await stop_server(hub, USER)
            rows["submit"][k].append(await timed_submit(hub, token, datasets))
        print(f"round {i + 1}: spawn {rows['spawn'][0][-1]:.3f}s / {rows['spawn'][1][-1]:.3f}s, "
              f"submit {rows['submit'][0][-1] * 1000:.1f}ms / {rows['submit'][1][-1] * 1000:.1f}ms "
              "(none / 5 datasets)", flush=True)
    return rows


def report(rows, n):
    print(f"\nmedian of {n} alternating runs (real hub + KubeSpawner on localkube):")
    for what, (none, five) in rows.items():
        a, b = statistics.median(none), statistics.median(five)
        print(f"  {what:6}  no datasets {a * 1000:8.1f}ms   5 datasets {b * 1000:8.1f}ms   "
              f"ratio {b / a:.2f}x")


async def hub_side(state, calls=300):
    """Median seconds of choices_for + resolve, with no datasets and with 5."""
    crater = Crater(datasets_volume="crater-data",
                    datasets_catalog=[{"name": "demo-iris", "sub_path": "public/demo-iris"}])
    store = DatasetStore(f"sqlite:///{Path(state) / 'bench.sqlite'}")
    for name in OWN:
        await store.create(USER, name)
    profiles = parse([{"slug": "cpu", "display_name": "CPU"}])
    five = [f"{USER}/{name}" for name in OWN] + ["demo-iris"]
    out = []
    for datasets in ([], five):
        times = []
        for _ in range(calls):
            began = time.perf_counter()
            choices = await choices_for(crater, datasets, False, store)
            workload.resolve({"datasets": datasets}, profiles, USER, [], {}, datasets=choices)
            times.append(time.perf_counter() - began)
        out.append(statistics.median(times))
    store.close()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="rounds (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dataset-bench-") as state:
        with LocalKubeProcess(Path(state) / "localkube") as cluster:
            hub = HubProcess(Path(state) / "hub", cluster.kubeconfig,
                             env={"CRATER_CONFIG_FILE": str(DEMO_CRATER)}).start()
            try:
                rows = asyncio.run(measure(hub, args.n))
            finally:
                hub.stop()
        none, five = asyncio.run(hub_side(state))
    report(rows, args.n)
    print(f"  hub-side datasets check, in process: no datasets {none * 1e6:.0f}µs, "
          f"5 datasets {five * 1e6:.0f}µs (one lookup query + the policy)")


if __name__ == "__main__":
    main()
