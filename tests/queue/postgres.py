"""A throwaway PostgreSQL server from Debian's ``postgresql`` package (initdb + pg_ctl)."""

import glob
import os
import shutil
import socket
import subprocess
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

    def start(self):
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self.run_as = "postgres"
            shutil.chown(self.root, user="postgres")
        env = {**os.environ, "LC_ALL": "C.UTF-8"}
        subprocess.run(self._cmd([_tool("initdb"), "-D", str(self.data), "-U", self.user,
                                  "--auth=trust", "-E", "UTF8"]),
                       check=True, capture_output=True, env=env)
        subprocess.run(self._cmd([_tool("pg_ctl"), "-D", str(self.data), "-l",
                                  str(self.root / "server.log"), "-w", "-o",
                                  f"-p {self.port} -k {self.root} -h 127.0.0.1", "start"]),
                       check=True, capture_output=True, env=env)
        subprocess.run(self._cmd([_tool("createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                                  "-U", self.user, "crater"]),
                       check=True, capture_output=True, env=env)
        return self

    def url(self, database):
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def stop(self):
        subprocess.run(self._cmd([_tool("pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"]),
                       capture_output=True)


