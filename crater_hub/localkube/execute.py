"""``pods/exec``: a command run inside a container, spoken over the websocket channel protocol.

The wire format is Kubernetes' (client-go ``tools/remotecommand``, the kubelet's ``wsstream``):
every binary message starts with a channel byte, 0 stdin, 1 stdout, 2 stderr, 3 the error
channel, 4 terminal resizes (JSON ``{"Width": w, "Height": h}``); ``v5.channel.k8s.io`` adds
255 + channel, "this channel is closed", which is how kubectl says stdin reached its end. When the
command has ended and its output is drained, the error channel carries the outcome — for ``v4`` and
``v5`` a ``Status`` (``Success``, or ``NonZeroExitCode`` with an ``ExitCode`` cause, which is what
``kubectl exec`` turns into its own exit code), for the original ``channel.k8s.io`` only a failure's
text — and the server closes the websocket normally: that close is the clients' end of output.

Where and how the process starts (environment, working directory, namespaces to enter) is the
kubelet's business (:meth:`.kubelet.Kubelet.enter`); this module only wires file descriptors.
With ``tty`` the process gets a pseudo-terminal as its controlling terminal (stdout and stderr
both go to it, as on a real terminal) and resize messages set its window size.
"""

import asyncio
import errno
import fcntl
import json
import logging
import os
import pty
import struct
import subprocess
import termios

log = logging.getLogger("localkube")

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255  # v5: the next byte names a channel the sender will not write to again

# Client's preference order does the choosing; these are what we speak.
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io")
READ_SIZE = 32 * 1024  # what client-go reads per message


def _go_list(argv):
    return "[" + " ".join(argv) + "]"


def exit_status(argv, code):
    """The Status a kubelet ends an exec with, for exit code ``code``."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {}, "status": "Failure",
        "message": f"command terminated with non-zero exit code: command '{_go_list(argv)}' exited with {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def internal_error(message):
    """The Status for a command that could not run at all (apimachinery's NewInternalError)."""
    message = f"error executing command in container: {message}"
    return {"metadata": {}, "status": "Failure", "message": f"Internal error occurred: {message}",
            "reason": "InternalError", "details": {"causes": [{"message": message}]}, "code": 500}


def _nonblocking(fd):
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


async def _ready(fd, writing):
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    add, remove = (loop.add_writer, loop.remove_writer) if writing else (loop.add_reader, loop.remove_reader)
    add(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        remove(fd)


async def read_fd(fd):
    """The next bytes from a non-blocking ``fd``; b"" at its end (EIO: a pty nobody holds any more)."""
    while True:
        try:
            return os.read(fd, READ_SIZE)
        except BlockingIOError:
            await _ready(fd, writing=False)
        except OSError as e:
            if e.errno == errno.EIO:
                return b""
            raise


async def write_fd(fd, data):
    """Write all of ``data`` to a non-blocking ``fd``, waiting while it is full."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            await _ready(fd, writing=True)


def _preexec(enter, cwd, tty):
    """The child's preexec_fn, or None when there is nothing to do in the child.

    Enter the container (the kubelet's ``enter``), then change to ``cwd``, a path in the container's
    view (Popen's own ``cwd`` changes directory *before* preexec_fn, in the host's view), then with
    a terminal make stdin, the pty slave, the controlling terminal of the new session
    (``start_new_session`` ran setsid before preexec_fn)."""
    if enter is None and not tty:
        return None

    def preexec():
        if enter is not None:
            enter()
            os.chdir(cwd)
        if tty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    return preexec


class ExecSession:
    """One command in a container, its standard streams tied to websocket channels.

    ``send(channel, data)`` is a coroutine writing one message. Call :meth:`start`, then feed
    every incoming message to :meth:`receive` while :meth:`run` returns the final Status.
    """

    def __init__(self, send, argv, env, cwd, preexec_fn, *, stdin, stdout, stderr, tty):
        self.send = send
        self.argv, self.env, self.cwd, self.enter = argv, env, cwd, preexec_fn
        self.want = {STDIN: stdin, STDOUT: stdout, STDERR: stderr and not tty}
        self.tty = tty
        self.proc = None
        self._stdin = None  # fd we write the client's stdin to (a pipe, or the pty master)
        self._outputs = {}  # channel -> fd we read (a pipe, or the pty master for stdout)
        self._pumps = []
        self._writing = None  # the stdin write under way
        self._fds = set()  # every fd of ours still open

    async def start(self):
        """Start the process; None, or the Status to end with when it could not start."""
        child = {}
        try:
            if self.tty:
                master, slave = pty.openpty()
                self._fds.add(master)
                child = {"stdin": slave, "stdout": slave, "stderr": slave}
                self._stdin = master if self.want[STDIN] else None
                self._outputs[STDOUT] = master  # read even if unwanted: a full pty blocks the command
            else:
                for channel, name in ((STDIN, "stdin"), (STDOUT, "stdout"), (STDERR, "stderr")):
                    if not self.want[channel]:
                        child[name] = asyncio.subprocess.DEVNULL
                        continue
                    read_end, write_end = os.pipe()
                    ours, theirs = (write_end, read_end) if channel == STDIN else (read_end, write_end)
                    self._fds.add(ours)
                    child[name] = theirs
                    if channel == STDIN:
                        self._stdin = ours
                    else:
                        self._outputs[channel] = ours
            for fd in self._fds:
                _nonblocking(fd)
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, env=self.env, cwd=self.cwd if self.enter is None else None,
                preexec_fn=_preexec(self.enter, self.cwd, self.tty), start_new_session=True, **child)
        except OSError as e:
            self._close_fds()
            reason = (e.strerror or str(e)).lower()
            if e.filename == self.cwd:  # runc's words for a working directory that is not there
                return internal_error(f'chdir to cwd ("{self.cwd}") set in config.json failed: {reason}')
            if e.errno == errno.ENOENT and "/" not in self.argv[0]:
                reason = "executable file not found in $PATH"
            return internal_error(f'exec: "{self.argv[0]}": {reason}')
        except subprocess.SubprocessError as e:  # entering the container failed (preexec_fn)
            self._close_fds()
            return internal_error(f"could not enter the container: {e}")
        finally:
            for fd in set(child.values()):  # the child's ends: its copies are all it needs
                if fd >= 0 and fd not in self._fds:
                    os.close(fd)
        return None

    async def run(self):
        """Forward output until the command has exited and its output is drained; its Status."""
        self._pumps = [asyncio.create_task(self._pump(ch, fd)) for ch, fd in self._outputs.items()]
        code = await self.proc.wait()
        await asyncio.gather(*self._pumps)
        return exit_status(self.argv, code if code >= 0 else 128 - code)

    async def _pump(self, channel, fd):
        while data := await read_fd(fd):
            if self.want[channel]:
                await self.send(channel, data)

    async def receive(self, message):
        """One message from the client: stdin data, a resize, or (v5) the end of stdin."""
        if not message:
            return
        channel, payload = message[0], message[1:]
        if channel == STDIN and self._stdin is not None:
            await self._write_stdin(payload)
        elif channel == RESIZE and self.tty:
            self._resize(payload)
        elif channel == CLOSE and payload[:1] == bytes([STDIN]) and self._stdin is not None:
            if self.tty:
                await self._write_stdin(b"\x04")  # end of input, as a terminal says it
            else:
                self._close_fd(self._stdin)
            self._stdin = None

    async def _write_stdin(self, data):
        self._writing = asyncio.ensure_future(write_fd(self._stdin, data))
        try:
            await self._writing
        except OSError as e:  # the command closed its stdin or ended: nobody reads this
            if e.errno not in (errno.EPIPE, errno.EIO):
                raise
        finally:
            self._writing = None

    def _resize(self, payload):
        for line in payload.decode(errors="replace").splitlines():
            try:
                size = json.loads(line)
                cols, rows = int(size["Width"]), int(size["Height"])
            except (ValueError, KeyError, TypeError):
                log.debug("exec: ignoring a malformed resize message %r", line)
                continue
            master = self._outputs.get(STDOUT)
            if master is not None and master in self._fds:
                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def _close_fd(self, fd):
        if fd in self._fds:
            self._fds.discard(fd)
            os.close(fd)

    def _close_fds(self):
        for fd in list(self._fds):
            self._close_fd(fd)

    async def close(self):
        """Stop forwarding and close our ends (the command sees EOF or a hang-up; it is not killed,
        as a runtime does not kill an exec whose client went away: it ends with its container).

        Whatever waits on one of our fds stops first, so that no fd is closed (and its number
        reused) while the event loop still watches it for us."""
        busy = [t for t in (*self._pumps, self._writing) if t is not None and not t.done()]
        for task in busy:
            task.cancel()
        await asyncio.gather(*busy, return_exceptions=True)
        self._close_fds()
