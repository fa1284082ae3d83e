"""SPDY/3.1 framing and stream multiplexing, as kubectl (<= 1.30), the kubelet and the
API server proxy speak it for exec, attach and port-forward (upstream:
k8s.io/apimachinery/pkg/util/httpstream/spdy over github.com/moby/spdystream).

Contract:
- `FrameCodec` turns frames into bytes and bytes into frames. It owns the two zlib
  contexts of a connection (SPDY/3 compresses all header blocks of one direction as
  one zlib stream, primed with `SPDY3_DICTIONARY`), so frames must be encoded in the
  order they go on the wire.
- `SpdyConnection` runs over any byte transport (`FrameWriter`: write/drain/close) and
  is fed with `data_received(bytes)` / `connection_lost(exc)`. Clients open streams
  (odd ids) with `open_stream(headers)`, which waits for the SYN_REPLY; servers get
  peer streams from `accept()` (every SYN_STREAM is answered with an empty SYN_REPLY at
  once, as upstream's upgrader does). PING is echoed, GOAWAY stops new streams.
- `SpdyStream`: `read()` returns b"" after the peer's FIN or RST; `write()` sends DATA
  frames; `close()` half-closes (DATA with FIN); `reset()` sends RST_STREAM.
- Flow control is minimal, like spdystream's: we send WINDOW_UPDATE (stream and
  session) as data arrives so peers that honour windows keep sending; we track the
  peer's windows but do not block on them (spdystream never sends WINDOW_UPDATE, so a
  sender that waited would stall after 64 KiB). Back-pressure comes from the transport.

Stream state machine: open -> half-closed (local FIN sent, or remote FIN received)
-> closed (both FINs, or RST either way, or connection lost)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

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
FLAG_UNIDIRECTIONAL = 0x02

# RST_STREAM status codes
PROTOCOL_ERROR = 1
INVALID_STREAM = 2
REFUSED_STREAM = 3
UNSUPPORTED_VERSION = 4
CANCEL = 5
INTERNAL_ERROR = 6
FLOW_CONTROL_ERROR = 7
STREAM_IN_USE = 8
STREAM_ALREADY_CLOSED = 9

# SETTINGS ids
SETTINGS_INITIAL_WINDOW_SIZE = 7

DEFAULT_WINDOW = 64 * 1024
MAX_DATA_CHUNK = 32 * 1024
MAX_FRAME_LENGTH = (1 << 24) - 1

Headers = dict[str, str]  # lower-case names; several values are joined by "\0"


def _spdy3_dictionary() -> bytes:
    """The zlib dictionary of SPDY/3 (draft-mbelshe-httpbis-spdy-00, section 2.6.10.1):
    length-prefixed header names and values, then a run of common strings."""
    words = [
        "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset",
        "accept-encoding", "accept-language", "accept-ranges", "age", "allow",
        "authorization", "cache-control", "connection", "content-base", "content-encoding",
        "content-language", "content-length", "content-location", "content-md5",
        "content-range", "content-type", "date", "etag", "expect", "expires", "from",
        "host", "if-match", "if-modified-since", "if-none-match", "if-range",
        "if-unmodified-since", "last-modified", "location", "max-forwards", "pragma",
        "proxy-authenticate", "proxy-authorization", "range", "referer", "retry-after",
        "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary",
        "via", "warning", "www-authenticate", "method", "get", "status", "200 OK",
        "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin",
    ]
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416"
        "417502504505203 Non-Authoritative Information204 No Content301 Moved Permanently"
        "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server "
        "Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug "
        "Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,"
        "image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset="
        "iso-8859-1,utf-,*,enq=0."
    )
    out = bytearray()
    for w in words:
        out += struct.pack(">I", len(w)) + w.encode()
    return bytes(out) + tail.encode()


SPDY3_DICTIONARY = _spdy3_dictionary()


class ProtocolError(Exception):
    """The peer sent something that is not SPDY/3.1; the connection cannot go on."""


class StreamReset(ConnectionResetError):
    """The stream was reset (RST_STREAM) or its connection went away."""


# ---------------------------------------------------------------------------- frames


@dataclass(frozen=True, kw_only=True)
class DataFrame:
    stream_id: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True, kw_only=True)
class SynStreamFrame:
    stream_id: int
    headers: Headers
    associated_to: int = 0
    priority: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True, kw_only=True)
class SynReplyFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True, kw_only=True)
class RstStreamFrame:
    stream_id: int
    status: int


@dataclass(frozen=True, kw_only=True)
class SettingsFrame:
    settings: dict[int, int] = field(default_factory=dict)  # id -> value
    clear: bool = False


@dataclass(frozen=True, kw_only=True)
class PingFrame:
    ping_id: int


@dataclass(frozen=True, kw_only=True)
class GoAwayFrame:
    last_good_stream_id: int
    status: int = 0


@dataclass(frozen=True, kw_only=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True, kw_only=True)
class WindowUpdateFrame:
    stream_id: int
    delta: int


Frame = (
    DataFrame | SynStreamFrame | SynReplyFrame | RstStreamFrame | SettingsFrame | PingFrame
    | GoAwayFrame | HeadersFrame | WindowUpdateFrame
)


def encode_header_block(headers: Headers) -> bytes:
    out = bytearray(struct.pack(">I", len(headers)))
    for name, value in headers.items():
        n, v = name.lower().encode(), value.encode()
        out += struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v
    return bytes(out)


def decode_header_block(raw: bytes) -> Headers:
    try:
        (count,), pos = struct.unpack_from(">I", raw), 4
        headers: Headers = {}
        for _ in range(count):
            (nlen,) = struct.unpack_from(">I", raw, pos)
            name = raw[pos + 4:pos + 4 + nlen].decode()
            pos += 4 + nlen
            (vlen,) = struct.unpack_from(">I", raw, pos)
            value = raw[pos + 4:pos + 4 + vlen].decode()
            pos += 4 + vlen
            if not name or pos > len(raw):
                raise ProtocolError("malformed header block")
            headers[name.lower()] = value
    except (struct.error, UnicodeDecodeError) as err:
        raise ProtocolError(f"malformed header block: {err}") from err
    return headers


class FrameCodec:
    """Encoder and incremental decoder of one connection's frames (both directions)."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY,
            zdict=SPDY3_DICTIONARY,
        )
        self._inflate = zlib.decompressobj(zdict=SPDY3_DICTIONARY)
        self._buf = bytearray()

    def _compress(self, headers: Headers) -> bytes:
        block = encode_header_block(headers)
        return self._deflate.compress(block) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def _decompress(self, data: bytes) -> Headers:
        try:
            raw = self._inflate.decompress(data)
        except zlib.error as err:
            raise ProtocolError(f"header decompression failed: {err}") from err
        return decode_header_block(raw)

    @staticmethod
    def _control(ftype: int, flags: int, payload: bytes) -> bytes:
        if len(payload) > MAX_FRAME_LENGTH:
            raise ValueError("frame too large")
        return struct.pack(">HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload

    def encode(self, frame: Frame) -> bytes:
        match frame:
            case DataFrame(stream_id=sid, data=data, fin=fin):
                if len(data) > MAX_FRAME_LENGTH:
                    raise ValueError("frame too large")
                flags = FLAG_FIN if fin else 0
                return struct.pack(">II", sid & 0x7FFFFFFF, (flags << 24) | len(data)) + data
            case SynStreamFrame():
                flags = (FLAG_FIN if frame.fin else 0) | (
                    FLAG_UNIDIRECTIONAL if frame.unidirectional else 0)
                head = struct.pack(">IIBB", frame.stream_id, frame.associated_to,
                                   (frame.priority & 7) << 5, 0)
                return self._control(SYN_STREAM, flags, head + self._compress(frame.headers))
            case SynReplyFrame(stream_id=sid, headers=h, fin=fin):
                payload = struct.pack(">I", sid) + self._compress(h)
                return self._control(SYN_REPLY, FLAG_FIN if fin else 0, payload)
            case HeadersFrame(stream_id=sid, headers=h, fin=fin):
                payload = struct.pack(">I", sid) + self._compress(h)
                return self._control(HEADERS, FLAG_FIN if fin else 0, payload)
            case RstStreamFrame(stream_id=sid, status=st):
                return self._control(RST_STREAM, 0, struct.pack(">II", sid, st))
            case SettingsFrame(settings=s, clear=clear):
                body = struct.pack(">I", len(s)) + b"".join(
                    struct.pack(">II", k & 0xFFFFFF, v) for k, v in s.items())
                return self._control(SETTINGS, 1 if clear else 0, body)
            case PingFrame(ping_id=pid):
                return self._control(PING, 0, struct.pack(">I", pid))
            case GoAwayFrame(last_good_stream_id=last, status=st):
                return self._control(GOAWAY, 0, struct.pack(">II", last, st))
            case WindowUpdateFrame(stream_id=sid, delta=d):
                return self._control(WINDOW_UPDATE, 0, struct.pack(">II", sid, d))
        raise TypeError(f"not a SPDY frame: {frame!r}")

    def feed(self, data: bytes) -> list[Frame]:
        """Append bytes from the wire; return the frames now complete (in order)."""
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= 8:
            (word, flags_len) = struct.unpack_from(">II", self._buf)
            length = flags_len & 0xFFFFFF
            if len(self._buf) < 8 + length:
                break
            flags = flags_len >> 24
            payload = bytes(self._buf[8:8 + length])
            del self._buf[:8 + length]
            if word & 0x80000000:
                frame = self._decode_control((word >> 16) & 0x7FFF, word & 0xFFFF, flags, payload)
                if frame is not None:
                    frames.append(frame)
            else:
                frames.append(DataFrame(stream_id=word, data=payload, fin=bool(flags & FLAG_FIN)))
        return frames

    def _decode_control(self, version: int, ftype: int, flags: int, p: bytes) -> Frame | None:
        if version != VERSION:
            raise ProtocolError(f"unsupported SPDY version {version}")
        fin = bool(flags & FLAG_FIN)
        try:
            if ftype == SYN_STREAM:
                sid, assoc, prio, _slot = struct.unpack_from(">IIBB", p)
                return SynStreamFrame(
                    stream_id=sid & 0x7FFFFFFF, associated_to=assoc & 0x7FFFFFFF,
                    priority=prio >> 5, fin=fin, unidirectional=bool(flags & FLAG_UNIDIRECTIONAL),
                    headers=self._decompress(p[10:]))
            if ftype == SYN_REPLY:
                (sid,) = struct.unpack_from(">I", p)
                return SynReplyFrame(stream_id=sid & 0x7FFFFFFF, fin=fin,
                                     headers=self._decompress(p[4:]))
            if ftype == HEADERS:
                (sid,) = struct.unpack_from(">I", p)
                return HeadersFrame(stream_id=sid & 0x7FFFFFFF, fin=fin,
                                    headers=self._decompress(p[4:]))
            if ftype == RST_STREAM:
                sid, status = struct.unpack_from(">II", p)
                return RstStreamFrame(stream_id=sid & 0x7FFFFFFF, status=status)
            if ftype == SETTINGS:
                (n,) = struct.unpack_from(">I", p)
                entries = {}
                for i in range(n):
                    idf, value = struct.unpack_from(">II", p, 4 + 8 * i)
                    entries[idf & 0xFFFFFF] = value
                return SettingsFrame(settings=entries, clear=bool(flags & 1))
            if ftype == PING:
                (pid,) = struct.unpack_from(">I", p)
                return PingFrame(ping_id=pid)
            if ftype == GOAWAY:
                last, status = struct.unpack_from(">II", p) if len(p) >= 8 else (
                    struct.unpack_from(">I", p)[0], 0)
                return GoAwayFrame(last_good_stream_id=last & 0x7FFFFFFF, status=status)
            if ftype == WINDOW_UPDATE:
                sid, delta = struct.unpack_from(">II", p)
                return WindowUpdateFrame(stream_id=sid & 0x7FFFFFFF, delta=delta & 0x7FFFFFFF)
        except struct.error as err:
            raise ProtocolError(f"short control frame type {ftype}: {err}") from err
        return None  # unknown control frames are ignored (SPDY/3 section 2.2.1)


# ------------------------------------------------------------------------ connection


class FrameWriter(Protocol):
    """The byte sink under a connection: asyncio.StreamWriter fits, so does
    `SpdyProtocol` (a hijacked server transport)."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...


class SpdyStream:
    def __init__(self, conn: SpdyConnection, stream_id: int, headers: Headers) -> None:
        self.conn = conn
        self.id = stream_id
        self.headers = headers
        self.reply_headers: Headers = {}
        self.reader = asyncio.StreamReader(limit=1 << 30)
        self.replied: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.local_closed = False
        self.remote_closed = False
        self.was_reset = False
        self.send_window = conn.peer_initial_window
        self._recv_unacked = 0

    def __repr__(self) -> str:
        return f"<SpdyStream {self.id} {self.headers}>"

    async def read(self, n: int = -1) -> bytes:
        return await self.reader.read(n)

    async def readexactly(self, n: int) -> bytes:
        return await self.reader.readexactly(n)

    async def write(self, data: bytes) -> None:
        if self.was_reset or self.conn.closed:
            raise StreamReset(f"stream {self.id} was reset")
        if self.local_closed:
            raise BrokenPipeError(f"stream {self.id} is closed for writing")
        view = memoryview(data)
        for i in range(0, len(view), MAX_DATA_CHUNK):
            chunk = bytes(view[i:i + MAX_DATA_CHUNK])
            self.send_window -= len(chunk)
            self.conn.send(DataFrame(stream_id=self.id, data=chunk))
        await self.conn.drain()

    async def close(self) -> None:
        """Half-close: tell the peer we are done writing (DATA frame with FIN)."""
        if self.local_closed or self.was_reset or self.conn.closed:
            return
        self.local_closed = True
        self.conn.send(DataFrame(stream_id=self.id, data=b"", fin=True))
        self.conn._maybe_forget(self)
        await self.conn.drain()

    def reset(self, status: int = CANCEL) -> None:
        if self.was_reset:
            return
        if not self.conn.closed:
            self.conn.send(RstStreamFrame(stream_id=self.id, status=status))
        self._on_reset()

    def _on_reset(self) -> None:
        self.was_reset = True
        self.local_closed = self.remote_closed = True
        self._remote_fin()
        if not self.replied.done():
            self.replied.set_exception(StreamReset(f"stream {self.id} was reset"))
        self.conn.streams.pop(self.id, None)

    def _remote_fin(self) -> None:
        self.remote_closed = True
        if not self.reader.at_eof():
            self.reader.feed_eof()

    def _on_data(self, data: bytes) -> None:
        if data and not self.remote_closed:
            self.reader.feed_data(data)
            self._recv_unacked += len(data)
            if self._recv_unacked >= DEFAULT_WINDOW // 2:
                self.conn.send(WindowUpdateFrame(stream_id=self.id, delta=self._recv_unacked))
                self._recv_unacked = 0


class SpdyConnection:
    def __init__(self, transport: FrameWriter, *, server: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.transport = transport
        self.server = server
        self.codec = FrameCodec()
        self.streams: dict[int, SpdyStream] = {}
        self.peer_initial_window = DEFAULT_WINDOW
        self.session_send_window = DEFAULT_WINDOW
        self.closed = False
        self.going_away = False
        self._clock = clock
        self._next_id = 2 if server else 1
        self._ping_ids = itertools.count(2 if server else 1, 2)
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._incoming: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self._closed_event = asyncio.Event()
        self._last_peer_stream = 0
        self._session_unacked = 0

    # -- output
    def send(self, frame: Frame) -> None:
        """Encode and write one frame now (encoding order == wire order)."""
        if self.closed:
            return
        self.transport.write(self.codec.encode(frame))

    async def drain(self) -> None:
        if not self.closed:
            with contextlib.suppress(ConnectionError):
                await self.transport.drain()

    # -- input
    def data_received(self, data: bytes) -> None:
        try:
            frames = self.codec.feed(data)
        except ProtocolError as err:
            log.warning("SPDY protocol error, closing: %s", err)
            self.send(GoAwayFrame(last_good_stream_id=self._last_peer_stream, status=1))
            self.abort()
            return
        for frame in frames:
            self._handle(frame)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        for stream in list(self.streams.values()):
            stream._on_reset()
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(ConnectionResetError("connection lost"))
        self._incoming.put_nowait(None)
        self._closed_event.set()

    def _handle(self, frame: Frame) -> None:
        match frame:
            case DataFrame(stream_id=sid, data=data, fin=fin):
                self._session_unacked += len(data)
                if self._session_unacked >= DEFAULT_WINDOW // 2:
                    self.send(WindowUpdateFrame(stream_id=0, delta=self._session_unacked))
                    self._session_unacked = 0
                stream = self.streams.get(sid)
                if stream is None:
                    return  # data for a finished stream: drop, as spdystream does
                stream._on_data(data)
                if fin:
                    stream._remote_fin()
                    self._maybe_forget(stream)
            case SynStreamFrame(stream_id=sid, headers=headers, fin=fin):
                if (sid % 2 == 0) == (not self.server) and sid != 0 and sid not in self.streams:
                    if self.going_away:
                        self.send(RstStreamFrame(stream_id=sid, status=REFUSED_STREAM))
                        return
                    self._last_peer_stream = max(self._last_peer_stream, sid)
                    stream = SpdyStream(self, sid, headers)
                    self.streams[sid] = stream
                    self.send(SynReplyFrame(stream_id=sid, headers={}))
                    stream.replied.set_result(None)
                    if fin:
                        stream._remote_fin()
                    self._incoming.put_nowait(stream)
                else:
                    self.send(RstStreamFrame(stream_id=sid, status=PROTOCOL_ERROR))
            case SynReplyFrame(stream_id=sid, headers=headers, fin=fin):
                stream = self.streams.get(sid)
                if stream is not None and not stream.replied.done():
                    stream.reply_headers = headers
                    stream.replied.set_result(None)
                    if fin:
                        stream._remote_fin()
                        self._maybe_forget(stream)
            case HeadersFrame(stream_id=sid, fin=fin):
                stream = self.streams.get(sid)
                if stream is not None and fin:
                    stream._remote_fin()
                    self._maybe_forget(stream)
            case RstStreamFrame(stream_id=sid):
                stream = self.streams.get(sid)
                if stream is not None:
                    stream._on_reset()
            case SettingsFrame(settings=settings):
                if SETTINGS_INITIAL_WINDOW_SIZE in settings:
                    new = settings[SETTINGS_INITIAL_WINDOW_SIZE]
                    for s in self.streams.values():
                        s.send_window += new - self.peer_initial_window
                    self.peer_initial_window = new
            case PingFrame(ping_id=pid):
                if (pid % 2 == 0) == self.server:  # an answer to one of ours
                    fut = self._pings.pop(pid, None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
                else:
                    self.send(frame)
            case GoAwayFrame():
                self.going_away = True
                self._incoming.put_nowait(None)
            case WindowUpdateFrame(stream_id=sid, delta=delta):
                if sid == 0:
                    self.session_send_window += delta
                elif (stream := self.streams.get(sid)) is not None:
                    stream.send_window += delta

    def _maybe_forget(self, stream: SpdyStream) -> None:
        if stream.local_closed and stream.remote_closed:
            self.streams.pop(stream.id, None)

    # -- API
    async def open_stream(self, headers: Headers, *, fin: bool = False,
                          reply_timeout: float | None = 30.0) -> SpdyStream:
        if self.closed or self.going_away:
            raise ConnectionResetError("SPDY connection is closed")
        sid = self._next_id
        self._next_id += 2
        stream = SpdyStream(self, sid, headers)
        self.streams[sid] = stream
        self.send(SynStreamFrame(stream_id=sid, headers=headers, fin=fin))
        if fin:
            stream.local_closed = True
        await self.drain()
        async with asyncio.timeout(reply_timeout):
            await stream.replied
        return stream

    async def accept(self) -> SpdyStream | None:
        """The next stream the peer opened; None once the connection is closing."""
        if self.closed or self.going_away:
            return None if self._incoming.empty() else self._incoming.get_nowait()
        return await self._incoming.get()

    async def ping(self, *, reply_timeout: float = 10.0) -> float:
        pid = next(self._ping_ids)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[pid] = fut
        start = self._clock()
        self.send(PingFrame(ping_id=pid))
        async with asyncio.timeout(reply_timeout):
            await fut
        return self._clock() - start

    async def close(self) -> None:
        """Say GOAWAY, flush, and close the transport."""
        if not self.closed:
            self.going_away = True
            self.send(GoAwayFrame(last_good_stream_id=self._last_peer_stream))
            await self.drain()
        self.abort()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.transport.close()
        self.connection_lost(None)

    async def wait_closed(self) -> None:
        await self._closed_event.wait()


class SpdyProtocol(asyncio.Protocol):
    """An asyncio protocol that feeds a SpdyConnection; used to take over a server
    transport after the HTTP/1.1 `101 Switching Protocols` answer."""

    def __init__(self, transport: asyncio.Transport, *, server: bool) -> None:
        self._transport = transport
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self.conn = SpdyConnection(self, server=server)

    def write(self, data: bytes) -> None:
        if not self._transport.is_closing():
            self._transport.write(data)

    async def drain(self) -> None:
        if self._transport.is_closing():
            raise ConnectionResetError("transport closed")
        if self._paused:
            fut = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(fut)
            await fut

    def close(self) -> None:
        self._transport.close()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        for fut in self._drain_waiters:
            if not fut.done():
                fut.set_result(None)
        self._drain_waiters.clear()

    def data_received(self, data: bytes) -> None:
        self.conn.data_received(data)

    def eof_received(self) -> bool | None:
        self.conn.connection_lost(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.resume_writing()
        self.conn.connection_lost(exc)
