"""``pods/portforward``: TCP connections into a pod, carried over one websocket.

Two wire formats, as a kubelet (behind the API server) speaks them:

- :class:`ChannelForwarder`, the websocket channel protocol (``v4.channel.k8s.io``, or
  ``portforward.k8s.io``/none): what the Python clients speak. The ports come in the URL
  (``?ports=8000,9000``); port ``i`` gets data channel ``2i`` and error channel ``2i+1``, and the
  server's first message on each is the port as two little-endian bytes. One connection to the pod
  per port, opened at once and kept for the life of the websocket.
- :class:`SpdyForwarder`, ``SPDY/3.1+portforward.k8s.io``: kubectl >= 1.31 tunnels the SPDY/3.1
  byte stream of its older upgrade through websocket messages (client-go ``tools/portforward``).
  Each connection accepted on kubectl's local port opens two SPDY streams with the headers
  ``streamType`` (``error`` then ``data``), ``port`` and ``requestID``; the server replies to each,
  connects to the port in the pod once both are there, copies bytes both ways, ends the data
  stream when the pod closes the connection, writes what went wrong (if anything) on the error
  stream and then ends that too, which is when kubectl lets go of the local connection.

Connections into the pod are the kubelet's business (:meth:`.kubelet.Kubelet.open_connection`).
"""

import asyncio
import logging
import os
import struct

from . import spdy

log = logging.getLogger("localkube")

CHANNEL_PROTOCOLS = ("v4.channel.k8s.io", "portforward.k8s.io")
SPDY_PROTOCOL = "SPDY/3.1+portforward.k8s.io"
READ_SIZE = 32 * 1024


def parse_ports(values):
    """The ``ports`` query values ("8000", "8000,9000") as ints; ValueError naming a bad one."""
    ports = []
    for value in values:
        for text in value.split(","):
            try:
                port = int(text)
            except ValueError:
                raise ValueError(f'unable to parse "{text}" as a port: it must be an integer from 1 to 65535') from None
            if not 0 < port < 65536:
                raise ValueError(f'port "{text}" must be an integer from 1 to 65535')
            ports.append(port)
    return ports


async def _connect(connect, describe, port):
    """``(reader, writer)``, or the error text a kubelet would write on the error stream."""
    try:
        return await connect(port), None
    except (OSError, LookupError) as e:  # LookupError: the pod is not running (any more)
        reason = os.strerror(e.errno) if getattr(e, "errno", None) else str(e)
        return None, f"error forwarding port {port} to pod {describe}: failed to connect to port {port} " \
                     f"inside the pod: {reason.lower()}"


async def _copy_out(reader, send):
    """Pod → client until the pod ends its side."""
    while data := await reader.read(READ_SIZE):
        await send(data)


class ChannelForwarder:
    """Port-forward on the channel protocol: ``send(message)`` writes one websocket message."""

    def __init__(self, send, connect, describe, ports):
        self.send, self.connect, self.describe, self.ports = send, connect, describe, ports
        self._writers = {}  # data channel -> the pod connection's writer, once connected
        self._connected = {2 * i: asyncio.get_running_loop().create_future() for i in range(len(ports))}
        self._tasks = []

    async def run(self):
        """Forward every port until the pod has closed every connection."""
        for i, port in enumerate(self.ports):
            initial = struct.pack("<H", port)
            await self.send(bytes([2 * i]) + initial)
            await self.send(bytes([2 * i + 1]) + initial)
        self._tasks = [asyncio.create_task(self._forward(2 * i, port)) for i, port in enumerate(self.ports)]
        await asyncio.gather(*self._tasks)

    async def _forward(self, channel, port):
        conn, error = await _connect(self.connect, self.describe, port)
        self._connected[channel].set_result(conn is not None)
        if conn is None:
            await self.send(bytes([channel + 1]) + error.encode())
            return
        reader, writer = conn
        self._writers[channel] = writer
        try:
            await _copy_out(reader, lambda data: self.send(bytes([channel]) + data))
        finally:
            writer.close()

    async def receive(self, message):
        """Client → pod: data for a data channel (before the pod connection exists, it waits)."""
        channel = message[0] if message else None
        if channel not in self._connected:
            return  # an error channel, or none of ours: the protocol has nothing there
        if not await self._connected[channel]:
            return
        writer = self._writers[channel]
        if not writer.is_closing():
            writer.write(message[1:])
            await writer.drain()

    async def close(self):
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers.values():
            writer.close()


class _Pair:
    """The error and data streams of one forwarded connection (one ``requestID``)."""

    def __init__(self, port):
        self.port = port
        self.error = None  # stream ids
        self.data = None
        self.writer = None
        self.connected = asyncio.get_running_loop().create_future()
        self.task = None


class SpdyForwarder:
    """Port-forward on SPDY/3.1 streams: ``send(bytes)`` writes bytes of the SPDY stream."""

    def __init__(self, send, connect, describe):
        self.send, self.connect, self.describe = send, connect, describe
        self._reader = spdy.FrameReader()
        self._writer = spdy.FrameWriter()
        self._pairs = {}  # requestID -> _Pair
        self._streams = {}  # stream id -> _Pair
        self._last_stream = 0
        self.done = asyncio.get_running_loop().create_future()  # the client said GOAWAY

    async def receive(self, message):
        try:
            frames = self._reader.feed(message)
        except spdy.ProtocolError as e:
            log.info("port-forward to %s: %s", self.describe, e)
            await self.send(self._writer.goaway(self._last_stream, 1))
            self._finish()
            return
        for frame in frames:
            await self._handle(frame)

    def _finish(self):
        if not self.done.done():
            self.done.set_result(None)

    async def _handle(self, frame):
        if frame.kind == spdy.SYN_STREAM:
            await self._open_stream(frame)
        elif frame.kind is None:
            pair = self._streams.get(frame.stream_id)
            if pair is not None and frame.stream_id == pair.data and await pair.connected:
                if frame.data and not pair.writer.is_closing():
                    pair.writer.write(frame.data)
                    await pair.writer.drain()
                if frame.fin and pair.writer.can_write_eof() and not pair.writer.is_closing():
                    pair.writer.write_eof()  # the client has no more to send: half-close
        elif frame.kind == spdy.RST_STREAM:
            pair = self._streams.get(frame.stream_id)
            if pair is not None and frame.stream_id == pair.data and pair.task is not None:
                pair.task.cancel()  # the client let go of this connection
        elif frame.kind == spdy.PING:
            await self.send(self._writer.ping(frame.value))
        elif frame.kind == spdy.GOAWAY:
            self._finish()

    async def _open_stream(self, frame):
        headers = {name: values[0] for name, values in frame.headers.items() if values}
        sid = frame.stream_id
        self._last_stream = max(self._last_stream, sid)
        kind = headers.get("streamtype")
        try:
            (port,) = parse_ports([headers.get("port", "")])
        except ValueError as e:
            log.info("port-forward to %s: stream %d: %s", self.describe, sid, e)
            await self.send(self._writer.rst_stream(sid, spdy.PROTOCOL_ERROR))
            return
        if kind not in ("error", "data"):
            await self.send(self._writer.rst_stream(sid, spdy.PROTOCOL_ERROR))
            return
        # Clients older than requestID pair streams by id: the data stream follows its error stream.
        request = headers.get("requestid") or str(sid if kind == "error" else sid - 2)
        pair = self._pairs.setdefault(request, _Pair(port))
        setattr(pair, kind, sid)
        self._streams[sid] = pair
        await self.send(self._writer.syn_reply(sid))
        if pair.error is not None and pair.data is not None and pair.task is None:
            pair.task = asyncio.create_task(self._forward(request, pair))

    async def _forward(self, request, pair):
        """One connection: pod → client until the pod closes it (or the client resets the data
        stream), then the error stream says how it went and ends."""
        error = None
        try:
            conn, error = await _connect(self.connect, self.describe, pair.port)
            pair.connected.set_result(conn is not None)
            if conn is not None:
                reader, pair.writer = conn
                await _copy_out(reader, lambda data: self.send(self._writer.data(pair.data, data)))
            await self.send(self._writer.data(pair.data, fin=True))
        except asyncio.CancelledError:
            pass  # the client reset the data stream, or the websocket is gone (then done is set)
        except Exception as e:  # the websocket went away while we wrote to it
            log.debug("port-forward to %s: connection %s ended: %r", self.describe, request, e)
            self._finish()
        finally:
            if not pair.connected.done():
                pair.connected.set_result(False)
            if pair.writer is not None:
                pair.writer.close()
            del self._pairs[request]
            self._streams.pop(pair.error, None)
            self._streams.pop(pair.data, None)
        if not self.done.done():
            try:
                if error:
                    await self.send(self._writer.data(pair.error, error.encode()))
                await self.send(self._writer.data(pair.error, fin=True))
            except Exception as e:  # the same
                log.debug("port-forward to %s: connection %s: %r", self.describe, request, e)

    async def close(self):
        """The websocket is gone: close every connection into the pod."""
        self._finish()
        tasks = [p.task for p in self._pairs.values() if p.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
