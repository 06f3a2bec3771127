"""SPDY/3.1 frames: as much of the protocol as kubectl's port-forward speaks to a kubelet.

kubectl >= 1.31 forwards ports through a websocket (subprotocol ``SPDY/3.1+portforward.k8s.io``)
whose binary messages carry a plain SPDY/3.1 byte stream: the same frames its older SPDY upgrade
sent on a raw connection (client-go ``tools/portforward``, Go's ``moby/spdystream``). Message
boundaries mean nothing there, so :class:`FrameReader` buffers bytes and cuts whole frames.

Header blocks of SYN_STREAM, SYN_REPLY and HEADERS frames are zlib-compressed with the SPDY/3
dictionary, one compression stream per direction for the whole connection (each block ends with
a sync flush), so the reader and the writer each keep one zlib object.

spdystream does no flow control (it never sends WINDOW_UPDATE and ignores it), so neither do we.
"""

import struct
import zlib
from dataclasses import dataclass, field

VERSION = 3

SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

FLAG_FIN = 0x01
MAX_DATA = (1 << 24) - 1

# RST_STREAM status codes
PROTOCOL_ERROR = 1
CANCEL = 5

_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base content-encoding "
    "content-language content-length content-location content-md5 content-range content-type date "
    "etag expect expires from host if-match if-modified-since if-none-match if-range "
    "if-unmodified-since last-modified location max-forwards pragma proxy-authenticate "
    "proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
    "user-agent vary via warning www-authenticate method get status"
).split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 "
    "Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service "
    "UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, "
    "Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,"
    "application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch"
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
# The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1), byte for byte
# as spdystream has it: length-prefixed header words, then status lines, dates and media types.
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()


class ProtocolError(Exception):
    """The peer sent something that is not SPDY/3.1: the connection cannot go on."""


@dataclass
class Frame:
    """One frame. ``kind`` is a control frame type, or None for a data frame."""

    kind: int | None
    flags: int
    stream_id: int = 0
    data: bytes = b""  # a data frame's payload
    headers: dict = field(default_factory=dict)  # SYN_STREAM/SYN_REPLY/HEADERS: name -> [values]
    value: int = 0  # PING id, RST_STREAM status, GOAWAY status

    @property
    def fin(self):
        return bool(self.flags & FLAG_FIN)


def _parse_headers(block):
    (count,) = struct.unpack_from(">I", block)
    pos, headers = 4, {}
    for _ in range(count):
        values = []
        for _ in range(2):
            (size,) = struct.unpack_from(">I", block, pos)
            values.append(block[pos + 4:pos + 4 + size].decode("latin-1"))
            pos += 4 + size
        name, value = values
        headers.setdefault(name.lower(), []).extend(value.split("\0"))
    return headers


class FrameReader:
    """Frames out of a byte stream fed in arbitrary pieces."""

    def __init__(self):
        self._buffer = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)

    def feed(self, data):
        """Add bytes; return the frames now complete (raises ProtocolError on garbage)."""
        self._buffer += data
        frames = []
        while len(self._buffer) >= 8:
            word, flags_length = struct.unpack_from(">II", self._buffer)
            length = flags_length & 0xFFFFFF
            if len(self._buffer) < 8 + length:
                break
            payload = bytes(self._buffer[8:8 + length])
            del self._buffer[:8 + length]
            flags = flags_length >> 24
            if word & 0x80000000:
                version, kind = (word >> 16) & 0x7FFF, word & 0xFFFF
                if version != VERSION:
                    raise ProtocolError(f"SPDY version {version} is not supported (only {VERSION})")
                frames.append(self._control(kind, flags, payload))
            else:
                frames.append(Frame(None, flags, word & 0x7FFFFFFF, data=payload))
        return frames

    def _control(self, kind, flags, payload):
        try:
            if kind in (SYN_STREAM, SYN_REPLY, HEADERS):
                skip = 10 if kind == SYN_STREAM else 4
                stream_id = struct.unpack_from(">I", payload)[0] & 0x7FFFFFFF
                block = self._inflate.decompress(payload[skip:])
                return Frame(kind, flags, stream_id, headers=_parse_headers(block))
            if kind == RST_STREAM or kind == WINDOW_UPDATE:
                stream_id, value = struct.unpack_from(">II", payload)
                return Frame(kind, flags, stream_id & 0x7FFFFFFF, value=value)
            if kind == PING:
                return Frame(kind, flags, value=struct.unpack_from(">I", payload)[0])
            if kind == GOAWAY:
                last, status = struct.unpack_from(">II", payload)
                return Frame(kind, flags, last & 0x7FFFFFFF, value=status)
        except (struct.error, zlib.error, UnicodeDecodeError) as e:
            raise ProtocolError(f"malformed SPDY control frame of type {kind}: {e}") from None
        return Frame(kind, flags)  # SETTINGS and the rest: nothing we act on


class FrameWriter:
    """Frames as bytes; keeps the header compression stream of this direction."""

    def __init__(self):
        self._deflate = zlib.compressobj(zdict=DICTIONARY)

    def _control(self, kind, flags, payload):
        return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload

    def _header_block(self, headers):
        raw = struct.pack(">I", len(headers))
        for name, value in headers.items():
            for part in (name.lower().encode(), value.encode()):
                raw += struct.pack(">I", len(part)) + part
        return self._deflate.compress(raw) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def syn_reply(self, stream_id, headers=None, fin=False):
        block = self._header_block(headers or {})
        return self._control(SYN_REPLY, FLAG_FIN if fin else 0, struct.pack(">I", stream_id) + block)

    def syn_stream(self, stream_id, headers, fin=False):
        """A client's stream opening (what the tests send as kubectl would)."""
        block = self._header_block(headers)
        return self._control(SYN_STREAM, FLAG_FIN if fin else 0,
                             struct.pack(">IIBB", stream_id, 0, 0, 0) + block)

    def rst_stream(self, stream_id, status=CANCEL):
        return self._control(RST_STREAM, 0, struct.pack(">II", stream_id, status))

    def ping(self, ping_id):
        return self._control(PING, 0, struct.pack(">I", ping_id))

    def goaway(self, last_stream_id, status=0):
        return self._control(GOAWAY, 0, struct.pack(">II", last_stream_id, status))

    def data(self, stream_id, data=b"", fin=False):
        """Data frames for ``data`` (split at the frame size limit), the last with FIN if asked."""
        chunks = [data[i:i + MAX_DATA] for i in range(0, len(data), MAX_DATA)] or [b""]
        out = b""
        for i, chunk in enumerate(chunks):
            flags = FLAG_FIN if fin and i == len(chunks) - 1 else 0
            out += struct.pack(">II", stream_id, (flags << 24) | len(chunk)) + chunk
        return out
