"""Start localkube as a child process and wait until its API answers.

The hub's embedded mode and the test suite both use this: localkube runs in its own process (its
pods' processes die with it), so a slow pod never competes with the hub's event loop, and a hub
restart can leave the cluster running when the caller wants that.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .network import network_file, read_network_file

PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """preexec_fn: the child gets SIGTERM when the process that started it exits."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class LocalKubeProcess:
    """A localkube subprocess: ``start()`` it, use ``kubeconfig``/``url``, ``stop()`` it.

    ``tie_to_parent``: the child is terminated when this process dies (the hub's embedded mode);
    tests that restart the hub keep it False and stop it themselves. ``env``: more environment
    for the child (``LOCALKUBE_ISOLATION``, say).
    """

    def __init__(self, state_dir, cluster_file=None, port=0, kubeconfig=None, log_file=None,
                 tie_to_parent=True, extra_args=(), env=None):
        self.state_dir = Path(state_dir)
        self.cluster_file = cluster_file
        self.port = port
        self.kubeconfig = Path(kubeconfig) if kubeconfig else self.state_dir / "kubeconfig"
        self.log_file = Path(log_file) if log_file else self.state_dir / "localkube.log"
        self.tie_to_parent = tie_to_parent
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})  # e.g. LOCALKUBE_ISOLATION=loopback
        self.proc = None
        self.url = None
        self.network = None  # what localkube wrote about its pod network (network.PodNetwork.info)

    def start(self, timeout=30):
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for stale in (self.kubeconfig, network_file(self.kubeconfig)):
            stale.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "crater_hub.localkube", "--state-dir", str(self.state_dir),
               "--kubeconfig", str(self.kubeconfig), "--port", str(self.port), *self.extra_args]
        if self.cluster_file:
            cmd += ["--cluster", str(self.cluster_file)]
        log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **self.extra_env},
            preexec_fn=_die_with_parent if self.tie_to_parent else None,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"localkube exited with {self.proc.returncode}; see {self.log_file}")
            if self.kubeconfig.exists():
                self.url = self._server_url()
                self.network = read_network_file(self.kubeconfig)
                try:
                    with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                        if r.status == 200:
                            return self
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"localkube did not answer within {timeout}s; see {self.log_file}")

    @property
    def gateway_ip(self):
        """The host's address as pods reach it (bind what pods must reach, e.g. the hub, there)."""
        return (self.network or {}).get("gateway_ip", "127.0.0.1")

    def _server_url(self):
        import yaml

        config = yaml.safe_load(self.kubeconfig.read_text())
        return config["clusters"][0]["cluster"]["server"]

    def stop(self, timeout=30):
        """Terminate localkube (it stops every pod first); SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def env(self):
        """Environment for a client process (kubectl, the hub) to use this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
