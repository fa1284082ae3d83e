"""Client sides of exec, attach and port-forward, over SPDY/3.1 and WebSocket (what
kubectl/client-go do; used by tests and by proxies).

- `exec_spdy(url, ...)` / `exec_websocket(url, ...)` -> `ExecResult` (exit code, stdout,
  stderr, the Status from the error stream). Attach uses the same calls (the URL
  decides); an attach that ends normally has exit code 0.
  stdin: bytes sent then closed (FIN on SPDY, the v5 close signal on WebSocket v5;
  WebSocket v4 cannot close stdin). resize: sizes sent before stdin.
- `SpdyPortForwarder` (one SPDY connection, many TCP connections: `open(port)`) and
  `websocket_port_forward(url, port)` (one WebSocket per TCP connection), both giving a
  `PortForwardConnection`: read / write / close_write / error text."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl as ssl_mod
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from kubenode.streaming import httpstream, wsstream
from kubenode.streaming.httpstream import UpgradeError
from kubenode.streaming.remotecommand import SPDY_PROTOCOLS
from kubenode.streaming.runner import TerminalSize
from kubenode.streaming.spdy import SpdyStream

__all__ = ["ExecResult", "PortForwardConnection", "SpdyPortForwarder", "StreamError",
           "UpgradeError", "exec_spdy", "exec_websocket", "websocket_port_forward"]


class StreamError(Exception):
    """The server reported a failure other than a non-zero exit code."""

    def __init__(self, message: str, status: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status or {}


@dataclass(kw_only=True)
class ExecResult:
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    status: dict[str, Any] = field(default_factory=dict)
    protocol: str = ""


def exit_code_of(protocol: str, error: bytes) -> tuple[int, dict[str, Any]]:
    """Interpret the error stream: v4/v5 JSON Status, older protocols plain text."""
    if not protocol.startswith(("v4.", "v5.")):
        if error:
            raise StreamError(error.decode(errors="replace"))
        return 0, {}
    if not error:
        return 0, {}
    st: dict[str, Any] = json.loads(error)
    if st.get("status") == "Success":
        return 0, st
    if st.get("reason") == "NonZeroExitCode":
        for cause in st.get("details", {}).get("causes", []):
            if cause.get("reason") == "ExitCode":
                return int(cause["message"]), st
    raise StreamError(st.get("message", "unknown error"), st)


def _size_json(size: TerminalSize) -> bytes:
    return json.dumps({"Width": size.width, "Height": size.height}).encode() + b"\n"


async def _read_all(stream: SpdyStream | None) -> bytes:
    if stream is None:
        return b""
    out = bytearray()
    while chunk := await stream.read(65536):
        out += chunk
    return bytes(out)


async def exec_spdy(
    url: str, *, stdin: bytes | None = None, stdout: bool = True, stderr: bool = True,
    tty: bool = False, resize: Sequence[TerminalSize] = (),
    protocols: Sequence[str] = SPDY_PROTOCOLS, headers: Mapping[str, str] | None = None,
    ssl: ssl_mod.SSLContext | None = None, time_limit: float = 60.0,
) -> ExecResult:
    async with asyncio.timeout(time_limit):
        cc = await httpstream.connect(url, protocols, headers=headers, ssl=ssl)
        try:
            conn = cc.conn
            err = await conn.open_stream({"streamtype": "error"})
            sin = await conn.open_stream({"streamtype": "stdin"}) if stdin is not None else None
            sout = await conn.open_stream({"streamtype": "stdout"}) if stdout else None
            serr = await conn.open_stream({"streamtype": "stderr"}) if stderr and not tty else None
            rsz = None
            if tty and cc.protocol in ("v4.channel.k8s.io", "v3.channel.k8s.io"):
                rsz = await conn.open_stream({"streamtype": "resize"})
            await err.close()  # we never write on the error stream
            if rsz is not None:
                for size in resize:
                    await rsz.write(_size_json(size))
            if sin is not None and stdin is not None:
                if stdin:
                    await sin.write(stdin)
                await sin.close()
            out, errout, errmsg = await asyncio.gather(
                _read_all(sout), _read_all(serr), _read_all(err))
            code, st = exit_code_of(cc.protocol, errmsg)
            return ExecResult(exit_code=code, stdout=out, stderr=errout, status=st,
                              protocol=cc.protocol)
        finally:
            await cc.aclose()


async def exec_websocket(
    url: str, *, stdin: bytes | None = None, stdout: bool = True, stderr: bool = True,
    tty: bool = False, resize: Sequence[TerminalSize] = (),
    protocols: Sequence[str] = (wsstream.V5, wsstream.V4),
    headers: Mapping[str, str] | None = None, ssl: ssl_mod.SSLContext | None = None,
    time_limit: float = 60.0,
) -> ExecResult:
    del stdout, stderr  # the URL's query / token decides which channels exist
    async with asyncio.timeout(time_limit), aiohttp.ClientSession() as session, \
            session.ws_connect(url, protocols=list(protocols), headers=headers,
                               ssl=ssl if ssl is not None else True,
                               max_msg_size=0) as ws:
        protocol = ws.protocol or wsstream.V1

        async def send(channel: int, data: bytes) -> None:
            msg = wsstream.encode(protocol, channel, data)
            await (ws.send_str(msg) if isinstance(msg, str) else ws.send_bytes(msg))

        if tty:
            for size in resize:
                await send(wsstream.RESIZE, _size_json(size))
        if stdin is not None:
            if stdin:
                await send(wsstream.STDIN, stdin)
            if protocol == wsstream.V5:
                await ws.send_bytes(bytes([wsstream.CLOSE, wsstream.STDIN]))
        chans: dict[int, bytearray] = {1: bytearray(), 2: bytearray(), 3: bytearray()}
        async for msg in ws:
            if msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                channel, data = wsstream.decode(protocol, msg.data)
                if channel in chans:
                    chans[channel] += data
        code, st = exit_code_of(protocol, bytes(chans[3]))
        return ExecResult(exit_code=code, stdout=bytes(chans[1]), stderr=bytes(chans[2]),
                          status=st, protocol=protocol)


class PortForwardConnection:
    """One forwarded TCP connection."""

    def __init__(self) -> None:
        self.data = asyncio.StreamReader(limit=1 << 30)
        self.error_text = ""

    async def read(self, n: int = -1) -> bytes:
        return await self.data.read(n)

    async def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def close_write(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class _SpdyPortForwardConnection(PortForwardConnection):
    def __init__(self, data: SpdyStream, error: SpdyStream) -> None:
        super().__init__()
        self._data, self._error = data, error
        self.data = data.reader
        self._error_task = asyncio.create_task(self._read_error())

    async def _read_error(self) -> None:
        self.error_text = (await _read_all(self._error)).decode(errors="replace")

    async def write(self, data: bytes) -> None:
        await self._data.write(data)

    async def close_write(self) -> None:
        await self._data.close()

    async def error(self) -> str:
        await self._error_task
        return self.error_text

    async def aclose(self) -> None:
        await self._data.close()
        self._error_task.cancel()


class SpdyPortForwarder:
    """`async with SpdyPortForwarder(url) as pf: conn = await pf.open(8080)`."""

    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None,
                 ssl: ssl_mod.SSLContext | None = None) -> None:
        self._url, self._headers, self._ssl = url, headers, ssl
        self._cc: httpstream.ClientConnection | None = None
        self._request_ids = iter(range(1 << 31))
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> SpdyPortForwarder:
        self._cc = await httpstream.connect(
            self._url, ("portforward.k8s.io",), headers=self._headers, ssl=self._ssl)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._cc is not None:
            await self._cc.aclose()

    async def open(self, port: int) -> _SpdyPortForwardConnection:
        assert self._cc is not None, "use `async with`"
        conn = self._cc.conn
        async with self._lock:  # error then data, both before the next pair (as kubectl)
            rid = str(next(self._request_ids))
            base = {"port": str(port), "requestid": rid}
            error = await conn.open_stream({**base, "streamtype": "error"})
            data = await conn.open_stream({**base, "streamtype": "data"})
        await error.close()
        return _SpdyPortForwardConnection(data, error)


class _WsPortForwardConnection(PortForwardConnection):
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, protocol: str,
                 session: aiohttp.ClientSession) -> None:
        super().__init__()
        self._ws, self._protocol, self._session = ws, protocol, session
        self._seen_prefix = {0: False, 1: False}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self._ws:
                if msg.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                    continue
                channel, data = wsstream.decode(self._protocol, msg.data)
                if channel in (0, 1) and not self._seen_prefix[channel]:
                    self._seen_prefix[channel] = True
                    data = data[2:]  # the port number, 2 bytes little endian
                if channel == 0 and data:
                    self.data.feed_data(data)
                elif channel == 1:
                    self.error_text += data.decode(errors="replace")
        finally:
            self.data.feed_eof()

    async def write(self, data: bytes) -> None:
        msg = wsstream.encode(self._protocol, 0, data)
        await (self._ws.send_str(msg) if isinstance(msg, str) else self._ws.send_bytes(msg))

    async def close_write(self) -> None:
        return None  # the v4 channel protocols cannot half-close

    async def error(self) -> str:
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        return self.error_text

    async def aclose(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._session.close()


async def websocket_port_forward(
    url: str, port: int | None = None, *, protocols: Sequence[str] = (wsstream.PORT_FORWARD,),
    headers: Mapping[str, str] | None = None, ssl: ssl_mod.SSLContext | None = None,
) -> _WsPortForwardConnection:
    """Open one forwarded connection (the caller must `aclose()` it)."""
    if port is not None:
        url += ("&" if "?" in url else "?") + f"port={port}"
    session = aiohttp.ClientSession()
    try:
        ws = await session.ws_connect(url, protocols=list(protocols), headers=headers,
                                      ssl=ssl if ssl is not None else True, max_msg_size=0)
    except BaseException:
        await session.close()
        raise
    return _WsPortForwardConnection(ws, ws.protocol or wsstream.V1, session)


def port_prefix(port: int) -> bytes:
    return struct.pack("<H", port)
