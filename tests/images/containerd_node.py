"""A node's container runtime for the tests: Debian's containerd + runc, as root, all its own.

Its root, state, socket and ``opt`` directories are under a directory of the test's; it never
touches the system's ``/run/containerd/containerd.sock`` or ``/var/lib/containerd``. (containerd
1.6 keeps its shims' sockets under ``/run/containerd/s/`` whatever the config says, named by a
hash of our socket's path, so they never meet another containerd's.) The CRI plugin is off: the
tests play the kubelet's part with ``ctr`` in the ``k8s.io`` namespace, where a kubelet's
containers live, so the snapshot a commit takes is made the way CRI makes it.

Missing programs or no root fail with a message naming the Debian package, never a skip.
"""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

#: program -> Debian package
PROGRAMS = {"containerd": "containerd", "ctr": "containerd", "containerd-shim-runc-v2": "containerd",
            "runc": "runc"}
NAMESPACE = "k8s.io"

CONFIG = """version = 2
root = "{dir}/root"
state = "{dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "{dir}/containerd.sock"
[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{dir}/opt"
"""


def missing_programs():
    """What is missing to run containerd here, as a message naming the packages; "" if nothing."""
    missing = sorted({pkg for prog, pkg in PROGRAMS.items() if not shutil.which(prog)})
    problems = []
    if missing:
        problems.append(f"missing programs of the Debian packages {', '.join(missing)} "
                        f"(apt-get install {' '.join(missing)}; ./dev test installs them as root)")
    if os.geteuid() != 0:
        problems.append("containerd and runc need root (run the tests as root, as CI does)")
    return "; ".join(problems)


class ContainerdNode:
    """``start()`` returns once containerd answers on its socket; ``stop()`` removes every
    container it ran (tasks killed, so no shim outlives it) and stops it."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.socket = str(self.dir / "containerd.sock")
        self.process = None

    def ctr(self, *args, check=True, timeout=120, **kwargs):
        """``ctr`` against this containerd in the kubelet's namespace; its CompletedProcess."""
        done = subprocess.run(["ctr", "--address", self.socket, "--namespace", NAMESPACE, *args],
                              capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and done.returncode:
            raise AssertionError(f"ctr {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def start(self, timeout=30):
        problem = missing_programs()
        assert not problem, problem
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "config.toml").write_text(CONFIG.format(dir=self.dir))
        log = open(self.dir / "containerd.log", "ab")
        self.process = subprocess.Popen(["containerd", "--config", str(self.dir / "config.toml")],
                                        stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"containerd exited with {self.process.returncode}: {self.log_tail()}")
            if os.path.exists(self.socket) and self.ctr("version", check=False, timeout=10).returncode == 0:
                return self
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"containerd did not answer on {self.socket} within {timeout}s: {self.log_tail()}")

    def log_tail(self):
        return (self.dir / "containerd.log").read_text(errors="replace")[-2000:]

    def pull(self, reference, username, password):
        host = reference.split("/", 1)[0]
        self.ctr("images", "pull", "--plain-http", "--user", f"{username}:{password}", reference, timeout=300)
        return host

    def run(self, image, name, *command, mounts=()):
        """Start a container (detached) as a kubelet would; its ID."""
        args = ["run", "-d"]
        for source, destination in mounts:
            args += ["--mount", f"type=bind,src={source},dst={destination},options=rbind:rw"]
        self.ctr(*args, image, name, *command)
        return name

    def exec(self, container, *command, check=True):
        """Run ``command`` in the running container and wait for it; its CompletedProcess."""
        return self.ctr("tasks", "exec", "--exec-id", f"e{time.monotonic_ns()}", container, *command, check=check)

    def remove(self, container):
        self.ctr("tasks", "kill", "--signal", "SIGKILL", container, check=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the task is deletable once it has stopped
            if self.ctr("tasks", "delete", container, check=False).returncode == 0:
                break
            if container not in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
                break
            time.sleep(0.05)
        self.ctr("containers", "delete", container, check=False)

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        for container in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.remove(container)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
