"""The embedded registry: Debian's ``docker-registry`` (CNCF distribution 2.8) on 127.0.0.1.

Started and stopped with the hub by ``jupyterhub_config.py`` (and by the tests, the same way):
its storage and config live under the state directory, deletes are enabled, and it asks for
HTTP basic credentials from an htpasswd file (bcrypt, the only format distribution reads) with
two accounts, ``crater-push`` (the hub's commits) and ``crater-pull`` (the pull secret in the
servers' namespace). Passwords are generated once and kept in the state directory (mode 0600).

distribution's htpasswd mode authenticates but does not authorize: both accounts may push. A
read-only pull account needs a registry with per-account permissions (Harbor robot accounts,
distribution behind a token server); docs/deploy.md says so.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt

BINARY_NAMES = ("docker-registry", "registry")
PUSH_USER, PULL_USER = "crater-push", "crater-pull"
MISSING = ("image commits are off: the registry program 'docker-registry' is not installed "
           "(Debian: apt-get install docker-registry; ./dev run installs it when run as root)")


def registry_binary():
    """The distribution registry program on PATH, or None."""
    for name in BINARY_NAMES:
        if found := shutil.which(name):
            return found
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalRegistry:
    """A ``docker-registry`` process; ``start()`` returns once ``/v2/`` answers."""

    def __init__(self, state_dir, port=None):
        self.dir = Path(state_dir)
        self.port = port
        self.process = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    def credentials(self):
        """``{user: password}`` of both accounts, made on first use."""
        path = self.dir / "credentials.json"
        if path.exists():
            return json.loads(path.read_text())
        self.dir.mkdir(parents=True, exist_ok=True)
        creds = {PUSH_USER: secrets.token_urlsafe(24), PULL_USER: secrets.token_urlsafe(24)}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds, f)
        return creds

    def _write_config(self):
        creds = self.credentials()
        htpasswd = self.dir / "htpasswd"
        lines = [f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=10)).decode()}"
                 for user, pw in creds.items()]
        htpasswd.write_text("\n".join(lines) + "\n")
        os.chmod(htpasswd, 0o600)
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.dir / "data")}, "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{self.port}", "secret": secrets.token_hex(16)},
            "auth": {"htpasswd": {"realm": "crater", "path": str(htpasswd)}},
        }
        path = self.dir / "config.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        os.chmod(path, 0o600)
        return path

    def start(self, timeout=20):
        binary = registry_binary()
        if binary is None:
            raise FileNotFoundError(MISSING)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        config = self._write_config()
        log = open(self.dir / "registry.log", "ab")
        self.process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.dir / "registry.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"docker-registry exited with {self.process.returncode}: {tail}")
            try:
                urllib.request.urlopen(self.url + "/v2/", timeout=1)
            except urllib.error.HTTPError as e:
                if e.code == 401:  # up, and asking for credentials
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.url} within {timeout}s")

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
