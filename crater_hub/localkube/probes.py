"""Readiness probes (``httpGet`` and ``tcpSocket``), as the kubelet's prober runs them.

Why: without them a container is Ready the moment its process starts, so whatever waits on
readiness (Endpoints, a RayCluster's ``HeadPodReady``, a Deployment's rollout) would see a server
before it listens. KubeRay's pods declare an ``httpGet`` readiness probe on the Ray agent's
``/api/healthz``: with it, ``RayClusterProvisioned`` here means what it means on a cluster.

The kubelet connects from the node to the pod's IP (``host`` if given), as the real one does:
isolated pods are reached on the bridge, loopback pods at their own 127.x address. Semantics of
``initialDelaySeconds``, ``periodSeconds``, ``timeoutSeconds``, ``successThreshold`` and
``failureThreshold`` are Kubernetes' (defaults 0, 10, 1, 1, 3); an HTTP status in [200, 400) is a
success. ``exec`` and ``grpc`` probes are not run: a container with one is ready while it runs,
as is a container without a readiness probe. Liveness and startup probes are not run at all.
"""

import asyncio


def readiness_action(container):
    """The readiness probe localkube runs for ``container``, or None (ready while running)."""
    probe = container.get("readinessProbe") or {}
    return probe if ("httpGet" in probe or "tcpSocket" in probe) else None


def _port(container, port):
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"port {port!r} is not a port of container {container['name']}")


async def probe_once(container, probe, pod_ip):
    """Run one probe attempt; True on success."""
    timeout = probe.get("timeoutSeconds") or 1
    action = probe.get("httpGet") or probe.get("tcpSocket")
    host = action.get("host") or pod_ip
    try:
        port = _port(container, action["port"])
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, ValueError, asyncio.TimeoutError):
        return False
    try:
        if "tcpSocket" in probe:
            return True
        path = action.get("path") or "/"
        if not path.startswith("/"):
            path = "/" + path
        headers = {"Host": f"{host}:{port}", "User-Agent": "kube-probe/1.31", "Accept": "*/*",
                   "Connection": "close"}
        for h in action.get("httpHeaders") or []:
            headers[h["name"]] = h["value"]
        request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(request.encode())
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.decode(errors="replace").split()
        return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
    except (OSError, asyncio.TimeoutError):
        return False
    finally:
        writer.close()


async def run_readiness(container, probe, pod_ip, report):
    """Probe until cancelled; ``report(ready)`` is called whenever readiness changes."""
    await asyncio.sleep(probe.get("initialDelaySeconds") or 0)
    period = probe.get("periodSeconds") or 10
    need_ok, need_fail = probe.get("successThreshold") or 1, probe.get("failureThreshold") or 3
    ready, streak, last = False, 0, None
    while True:
        ok = await probe_once(container, probe, pod_ip)
        streak = streak + 1 if ok == last else 1
        last = ok
        if ok and not ready and streak >= need_ok:
            ready = True
            report(True)
        elif not ok and ready and streak >= need_fail:
            ready = False
            report(False)
        await asyncio.sleep(period)
