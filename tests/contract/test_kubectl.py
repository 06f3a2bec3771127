"""localkube driven by the real ``kubectl`` (the current release the test extra installs from PyPI)."""

import asyncio

from tests.helpers import wait_for

MANIFEST = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: greeting
data:
  text: hello from a configmap
---
apiVersion: v1
kind: Pod
metadata:
  name: greeter
  labels: {app: greeter}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox:1.36
    command: ["sh", "-c", "echo \\"$GREETING\\"; echo second line; sleep 30"]
    env:
    - name: GREETING
      valueFrom:
        configMapKeyRef: {name: greeting, key: text}
"""


async def test_get_nodes_shows_the_demo_cluster(kubectl):
    out = await kubectl("get", "nodes")
    lines = out.strip().splitlines()
    assert lines[0].split()[:5] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert sorted(line.split()[0] for line in lines[1:]) == ["cpu-0", "gpu-a100-0", "gpu-t4-0"]
    assert all(line.split()[1] == "Ready" for line in lines[1:])
    gpus = await kubectl("get", "node", "gpu-a100-0", "-o", "jsonpath={.status.allocatable.nvidia\\.com/gpu}")
    assert gpus == "4"


async def test_apply_logs_describe_delete(kube, kubectl, tmp_path):
    path = tmp_path / "greeter.yaml"
    path.write_text(MANIFEST)
    out = await kubectl("apply", "-f", str(path))
    assert "configmap/greeting created" in out and "pod/greeter created" in out

    async def running():
        return "Running" in await kubectl("get", "pod", "greeter", "--no-headers")

    await wait_for(running, timeout=20, message="greeter Running")

    async def logged():
        return "second line" in await kubectl("logs", "greeter")

    await wait_for(logged, timeout=10, message="greeter logs")
    assert (await kubectl("logs", "greeter", "--tail=1")).strip() == "second line"
    assert (await kubectl("logs", "greeter")).splitlines()[0] == "hello from a configmap"

    described = await kubectl("describe", "pod", "greeter")
    assert "Node:" in described and "busybox:1.36" in described
    for reason in ("Scheduled", "Pulled", "Created", "Started"):
        assert reason in described, f"{reason} event missing from describe:\n{described}"

    again = await kubectl("apply", "-f", str(path))
    assert "configmap/greeting unchanged" in again

    out = await kubectl("delete", "-f", str(path), "--grace-period=1", "--timeout=30s")
    assert 'pod "greeter" deleted' in out
    assert "NotFound" in await kubectl("get", "pod", "greeter", check=False)


async def test_get_watch_streams_changes(kube, kubectl):
    watcher = asyncio.create_task(kubectl("get", "pods", "-w", "--request-timeout=4s", check=False))
    await wait_for(lambda: kube.lk.store._watchers, message="kubectl watch open")
    await kubectl("run", "blink", "--image=busybox:1.36", "--restart=Never", "--", "sh", "-c", "exit 0")
    out = await asyncio.wait_for(watcher, 30)
    rows = [line.split() for line in out.splitlines() if line.startswith("blink")]
    statuses = [row[2] for row in rows]
    assert statuses[0] == "Pending" and "Completed" in statuses, out
