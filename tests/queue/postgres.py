"""A throwaway PostgreSQL server from Debian's ``postgresql`` package (initdb + pg_ctl)."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _tool(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or \
        ([shutil.which(name)] if shutil.which(name) else [])
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} was not found (/usr/lib/postgresql/*/bin or PATH): "
                           "install the Debian package postgresql")
    return found[-1]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, root):
        self.root = Path(root)
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = "crater"
        self.run_as = None

    def _cmd(self, args):
        # initdb refuses to run as root: run the server as an unprivileged user then
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *args] if self.run_as else args
        return args

    def _run(self, args):
        env = {**os.environ, "LC_ALL": "C.UTF-8"}
        result = subprocess.run(self._cmd(args), capture_output=True, env=env, text=True)
        if result.returncode:
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}")

    def start(self):
        if os.geteuid() == 0:
            # initdb refuses root: the server runs as the package's postgres user, in a
            # directory it can reach (pytest's tmp dirs are private to root)
            self.run_as = "postgres"
            self.root = Path(tempfile.mkdtemp(prefix="crater-pg-"))
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, user="postgres")
            self.data = self.root / "data"
        self.root.mkdir(parents=True, exist_ok=True)
        self._run([_tool("initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                   "-E", "UTF8"])
        self._run([_tool("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
                   "-w", "-o", f"-p {self.port} -k {self.root} -h 127.0.0.1", "start"])
        self.createdb("crater")
        return self

    def createdb(self, name):
        self._run([_tool("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                   name])
        return self.url(name)

    def url(self, database):
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def stop(self):
        subprocess.run(self._cmd([_tool("pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"]),
                       capture_output=True)
        if self.run_as:
            shutil.rmtree(self.root, ignore_errors=True)


