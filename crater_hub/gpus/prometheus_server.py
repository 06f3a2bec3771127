"""A real Prometheus server as a child process: the embedded hub's and the tests' metrics store.

The embedded default has no cluster monitoring to lean on, so the hub runs Debian's ``prometheus``
itself (``./dev`` installs it): data under the state directory, listening on 127.0.0.1 at a port
of its own (never the package's :9090, where a system Prometheus may run), scraping

- every localkube node's DCGM exporter, at the API server's node proxy path
  ``/api/v1/nodes/<node>:9400/proxy/metrics`` (a file_sd target per node, rewritten by
  :meth:`PrometheusServer.set_dcgm_targets`; Prometheus re-reads it on change), and
- the hub's own ``/hub/metrics`` (job ``jupyterhub``), with a token of its own.

In the embedded hub it runs as a JupyterHub *managed service* (``python -m
crater_hub.gpus.prometheus_server``, see :func:`embedded_service`): the hub starts it with itself,
restarts it if it dies and stops it on shutdown, and hands it an API token and the hub's internal
address — so the scrape of ``/hub/metrics`` works wherever the hub really listens, authenticated
(role scope ``read:metrics``), without turning off ``authenticate_prometheus``.

Only process management and configuration live here; the hub queries it over HTTP like any
other Prometheus (:mod:`.prometheus`).
"""

import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

PR_SET_PDEATHSIG = 1
BINARY = "prometheus"
MISSING = ("the `prometheus` server is not installed: install the Debian package `prometheus` "
           "(apt-get install --no-install-recommends prometheus; ./dev run and ./dev test do it as root)")


def _die_with_parent():
    """preexec_fn: the child gets SIGTERM when the process that started it exits."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _duration(seconds):
    """Prometheus's duration syntax: ``5s``, ``1500ms``."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


class PrometheusServer:
    """One Prometheus process: ``start()``, ``url``, ``set_dcgm_targets()``, ``stop()``.

    ``data_dir`` holds its configuration, target files, TSDB and log. ``hub_metrics_url``
    (``http://10.0.0.1:8081/hub/metrics``): scrape it too, with ``hub_token`` (a JupyterHub
    token with ``read:metrics``; kept in a file only the owner reads) unless None.
    ``tie_to_parent``: the server gets SIGTERM when this process dies.
    """

    def __init__(self, data_dir, *, port=None, host="127.0.0.1", scrape_interval=5.0,
                 hub_metrics_url=None, hub_token=None, retention="90d", tie_to_parent=True,
                 binary=None):
        self.data_dir = Path(data_dir).absolute()
        self.host = host
        self.port = port
        self.scrape_interval = float(scrape_interval)
        self.hub_metrics_url = hub_metrics_url
        self.hub_token = hub_token
        self.retention = retention
        self.tie_to_parent = tie_to_parent
        self.binary = binary or shutil.which(BINARY)
        self.proc = None

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    @property
    def config_file(self):
        return self.data_dir / "prometheus.yml"

    @property
    def dcgm_targets_file(self):
        return self.data_dir / "dcgm-targets.json"

    @property
    def log_file(self):
        return self.data_dir / "prometheus.log"

    def config(self):
        """The prometheus.yml this server runs with (a dict)."""
        interval = _duration(self.scrape_interval)
        jobs = [{
            "job_name": "dcgm",
            "file_sd_configs": [{"files": [str(self.dcgm_targets_file)], "refresh_interval": interval}],
        }]
        if self.hub_metrics_url:
            scheme, _, rest = self.hub_metrics_url.partition("://")
            address, _, path = rest.partition("/")
            job = {"job_name": "jupyterhub", "scheme": scheme, "metrics_path": f"/{path}",
                   "static_configs": [{"targets": [address]}]}
            if self.hub_token:
                job["authorization"] = {"credentials_file": str(self.data_dir / "hub-token")}
            jobs.append(job)
        return {
            "global": {"scrape_interval": interval, "scrape_timeout": interval,
                       "evaluation_interval": interval},
            "scrape_configs": jobs,
        }

    def set_dcgm_targets(self, api_url, nodes):
        """Scrape the DCGM exporters of ``nodes`` (names) of the localkube at ``api_url``.

        One target per node, each its own ``instance`` (the node's name), so that per-target
        series such as ``up`` stay apart. Written atomically; Prometheus picks it up by itself.
        """
        address = api_url.split("://", 1)[-1].rstrip("/")
        groups = [{"targets": [address],
                   "labels": {"__metrics_path__": f"/api/v1/nodes/{name}:9400/proxy/metrics",
                              "instance": name}}
                  for name in sorted(nodes)]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dcgm_targets_file.with_name(f".{self.dcgm_targets_file.name}.{os.getpid()}")
        tmp.write_text(json.dumps(groups, indent=1))
        tmp.replace(self.dcgm_targets_file)

    def command(self):
        """Write the configuration (and the hub token) and return the server's argv."""
        if not self.binary:
            raise RuntimeError(MISSING)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port(self.host)
        if not self.dcgm_targets_file.exists():
            self.set_dcgm_targets("http://127.0.0.1:1", [])
        if self.hub_token:
            token = self.data_dir / "hub-token"
            token.touch(mode=0o600)
            token.chmod(0o600)
            token.write_text(self.hub_token)
        self.config_file.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        (self.data_dir / "url").write_text(self.url)  # where to find it (tests, operators)
        return [self.binary, f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.data_dir / 'data'}",
                f"--storage.tsdb.retention.time={self.retention}",
                f"--web.listen-address={self.host}:{self.port}"]

    def start(self, timeout=30):
        """Start the server and return when it is ready; RuntimeError naming the package when
        the binary is missing, or the log when it does not come up."""
        cmd = self.command()
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent if self.tie_to_parent else None, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"prometheus was not ready within {timeout}s: {self._log_tail()}")

    def _log_tail(self, lines=15):
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        """SIGTERM (Prometheus closes its TSDB cleanly), SIGKILL after ``timeout`` seconds."""
        if not self.running():
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def node_names(api_url, timeout=30):
    """The nodes of the (localkube) cluster at ``api_url``, waiting for its API. Blocking."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{api_url.rstrip('/')}/api/v1/nodes", timeout=5) as r:
                return [n["metadata"]["name"] for n in json.load(r)["items"]]
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def embedded_service(data_dir, port, localkube_url, scrape_interval=5.0):
    """The managed-service entry of ``c.JupyterHub.services`` that runs this Prometheus with the
    hub, and the role that lets its token read ``/hub/metrics``: ``(service, role)``."""
    import sys

    name = "crater-prometheus"
    command = [sys.executable, "-m", "crater_hub.gpus.prometheus_server", "--data-dir", str(data_dir),
               "--port", str(port), "--localkube", localkube_url,
               "--scrape-interval", str(scrape_interval)]
    return ({"name": name, "command": command},
            {"name": name, "scopes": ["read:metrics"], "services": [name]})


def main(argv=None):
    """Run as the hub's managed service: configure from the hub's environment, then become
    Prometheus (exec), so that the hub's stop signal reaches Prometheus itself."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--localkube", help="the localkube API whose nodes' DCGM exporters to scrape")
    parser.add_argument("--scrape-interval", type=float, default=5.0)
    args = parser.parse_args(argv)
    api_url = os.environ.get("JUPYTERHUB_API_URL", "")  # http://<hub ip>:8081/hub/api
    server = PrometheusServer(
        args.data_dir, port=args.port, scrape_interval=args.scrape_interval,
        hub_metrics_url=api_url[: -len("api")] + "metrics" if api_url.endswith("/api") else None,
        hub_token=os.environ.get("JUPYTERHUB_API_TOKEN"))
    if args.localkube:
        server.set_dcgm_targets(args.localkube, node_names(args.localkube))
    cmd = server.command()
    # its log beside its data, not in the hub's
    log = os.open(server.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    _die_with_parent()  # kept across exec: Prometheus dies with the hub even on SIGKILL
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
