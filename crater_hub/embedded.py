"""The pieces of a local evaluation run that ``jupyterhub_config.py`` needs from the package.

Kept out of the config file so that it stays a short, readable list of settings, and so that
tests and benchmarks start the platform with the same code.
"""

import atexit
import os
import shutil
import sys
from pathlib import Path

from .gpus import prometheus_server
from .images.local_registry import MISSING, PULL_USER, PUSH_USER, LocalRegistry, registry_binary
from .localkube import LocalKubeProcess
from .localkube.network import read_network_file

PROXY = "configurable-http-proxy"


def start_embedded_cluster(state_dir):
    """Start localkube with the demo cluster and point this process's Kubernetes clients at it.

    localkube (and with it every pod's process) is tied to this process, so it dies with the hub
    even on SIGKILL; on a normal exit it is stopped gracefully.
    """
    # The hub's own state (its database, cookie secret) lives next to localkube's: hidden from pods.
    hub_state = Path(state_dir).absolute().parent
    # --kuberay-crd: RayClusters are served from the start, so /hub/api/crater/ray works (the
    # embedded cluster has no operator to install KubeRay's CRD; localkube's controller is it)
    cluster = LocalKubeProcess(state_dir, tie_to_parent=True,
                               extra_args=["--mask", str(hub_state), "--kuberay-crd"]).start()
    atexit.register(cluster.stop)
    use_kubeconfig(cluster.kubeconfig)
    return cluster


def run_embedded_prometheus(c, state_dir, cluster, port=None, scrape_interval=5.0):
    """Run a real Prometheus with the hub (a managed service), scraping ``cluster``'s DCGM
    exporters and the hub's /hub/metrics, and point ``Crater.prometheus_url`` at it.

    Data under ``state_dir``; the port is ``port``, else ``$CRATER_PROMETHEUS_PORT``, else a free
    one (never Prometheus's usual 9090, where a system server may run). Without the
    ``prometheus`` binary the hub runs without utilization and says why in its log.
    Returns the URL, or None.
    """
    import logging

    if shutil.which(prometheus_server.BINARY) is None:
        logging.getLogger("crater_hub").warning("GPU utilization off: %s", prometheus_server.MISSING)
        return None
    port = port or int(os.environ.get("CRATER_PROMETHEUS_PORT") or prometheus_server.free_port())
    service, role = prometheus_server.embedded_service(
        Path(state_dir).absolute(), port, cluster.url, scrape_interval)
    c.JupyterHub.services.append(service)
    c.JupyterHub.load_roles.append(role)
    url = f"http://127.0.0.1:{port}"
    c.Crater.prometheus_url = url
    c.Crater.prometheus_scrape_interval = scrape_interval
    return url


def start_embedded_registry(c, state_dir):
    """Start the embedded registry (Debian's docker-registry) under ``state_dir`` and point
    ``c.CraterImages`` at it; stopped with the hub. Without the program, commits are off and
    ``c.CraterImages.disabled_reason`` says why (the UI shows it)."""
    if registry_binary() is None:
        c.CraterImages.disabled_reason = MISSING
        return None
    registry = LocalRegistry(state_dir).start()
    atexit.register(registry.stop)
    creds = registry.credentials()
    c.CraterImages.registry_url = registry.url
    c.CraterImages.push_username, c.CraterImages.push_password = PUSH_USER, creds[PUSH_USER]
    c.CraterImages.pull_username, c.CraterImages.pull_password = PULL_USER, creds[PULL_USER]
    return registry


def use_kubeconfig(path):
    """Make every Kubernetes client of this process (KubeSpawner's too) load the kubeconfig ``path``.

    kubernetes_asyncio reads ``KUBECONFIG`` once, when it is first imported, into its default
    location, and by the time a config file runs it may well be imported already; so that default
    is updated along with the environment (which child processes, kubectl say, inherit).
    """
    from kubernetes_asyncio.config import kube_config

    os.environ["KUBECONFIG"] = str(path)
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(path)


def pod_reachable_ip(kubeconfig=None):
    """The host address where pods reach the hub: the pod bridge's gateway of a localkube.

    An isolated localkube's pods live in network namespaces of their own, so the hub's API must
    listen where they reach the host: the gateway it wrote next to its kubeconfig (``kubeconfig``,
    else ``$KUBECONFIG``). A loopback localkube or a real cluster: 127.0.0.1.
    """
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    info = read_network_file(path) if path else None
    return (info or {}).get("gateway_ip", "127.0.0.1")


def proxy_command():
    """The configurable-http-proxy command: from PATH, else the one ``./dev`` installs in the venv.

    When neither exists the bare name is returned, so that JupyterHub's own error names it.
    """
    in_venv = Path(sys.prefix) / "node" / "node_modules" / ".bin" / PROXY
    if shutil.which(PROXY) or not in_venv.exists():
        return [PROXY]
    return [str(in_venv)]
