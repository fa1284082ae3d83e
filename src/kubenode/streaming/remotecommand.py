"""Server side of exec and attach (upstream: kubelet/cri/streaming/remotecommand), over
SPDY/3.1 or WebSocket, whichever the client asked for.

`serve(request, opts=..., run=...)` sets the streams up, calls `run(stdin, stdout,
stderr, resize)` (which returns an exit code for exec, None for attach), reports the
result on the error stream, and closes everything:

- SPDY (`v4.channel.k8s.io`, also v3/v2/`channel.k8s.io`): the client opens one stream
  per channel, named by the `streamType` header (error, stdin, stdout, stderr, resize);
  we wait (`stream_creation_timeout`) for the ones `opts` calls for.
- WebSocket (`v5`, `v4`, `v4.base64`, `base64`, `channel.k8s.io`): channels in messages;
  an empty message on the lowest output channel says "ready" (as upstream does).
- The error stream carries, for v4/v5, a JSON `Status`: Success, or Failure with reason
  `NonZeroExitCode` and `details.causes[{reason: ExitCode, message: "<n>"}]`, or
  `InternalError`; for older protocols the bare error text (nothing on success).
- Resize: a stream of JSON `{"Width": w, "Height": h}` objects.
- If the client goes away, `run` is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from kubenode.streaming import httpstream, wsstream
from kubenode.streaming.runner import InputStream, OutputStream, TerminalSize, no_resize
from kubenode.streaming.spdy import SpdyConnection, SpdyStream

log = logging.getLogger(__name__)

SPDY_PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                  "channel.k8s.io")
STREAM_TYPE_HEADER = "streamtype"
STDIN, STDOUT, STDERR, ERROR, RESIZE = "stdin", "stdout", "stderr", "error", "resize"

Run = Callable[
    [InputStream | None, OutputStream | None, OutputStream | None,
     AsyncIterator[TerminalSize]],
    Awaitable[int | None],
]


@dataclass(frozen=True, kw_only=True)
class Options:
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


class ExitCodeError(Exception):
    def __init__(self, cmd: list[str], code: int) -> None:
        super().__init__(f"error executing command [{' '.join(cmd)}], exit code {code}")
        self.code = code


def status(result: int | None, error: BaseException | None, *,
           cmd: list[str] | None = None) -> dict[str, Any]:
    """The metav1.Status written on the error stream (v4 and later)."""
    if error is None and not result:
        return {"metadata": {}, "status": "Success"}
    if error is None and result:
        err = ExitCodeError(cmd or [], result)
        return {
            "metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: {err}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(result)}]},
        }
    return {
        "metadata": {}, "status": "Failure",
        "message": f"Internal error occurred: {error}", "reason": "InternalError",
        "details": {"causes": [{"message": str(error)}]}, "code": 500,
    }


def _versioned(protocol: str) -> bool:
    return protocol.startswith(("v4.", "v5."))


def _error_payload(protocol: str, st: dict[str, Any]) -> bytes:
    if _versioned(protocol):
        return json.dumps(st, separators=(",", ":")).encode()
    return b"" if st["status"] == "Success" else st.get("message", "").encode()


async def resize_events(read: Callable[[int], Awaitable[bytes]]) -> AsyncIterator[TerminalSize]:
    """Decode a stream of concatenated JSON TerminalSize objects."""
    decoder = json.JSONDecoder()
    buf = ""
    while chunk := await read(4096):
        buf += chunk.decode(errors="replace")
        while True:
            buf = buf.lstrip()
            if not buf:
                break
            try:
                obj, end = decoder.raw_decode(buf)
            except json.JSONDecodeError:
                break
            buf = buf[end:]
            if isinstance(obj, dict):
                yield TerminalSize(width=int(obj.get("Width", 0)), height=int(obj.get("Height", 0)))


async def serve(request: web.Request, *, opts: Options, run: Run, cmd: list[str] | None = None,
                stream_creation_timeout: float = 30.0) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await _serve_websocket(request, opts=opts, run=run, cmd=cmd)
    return await _serve_spdy(request, opts=opts, run=run, cmd=cmd,
                             creation_limit=stream_creation_timeout)


async def _run_until_gone(run_coro: Awaitable[int | None],
                          gone: Awaitable[Any]) -> tuple[int | None, BaseException | None]:
    task = asyncio.ensure_future(run_coro)
    watcher = asyncio.ensure_future(gone)
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if task.cancelled():
        return None, ConnectionResetError("client went away")
    exc = task.exception()
    if exc is not None:
        log.info("streaming session failed: %r", exc)
        return None, exc
    return task.result(), None


class _SpdyOut:
    def __init__(self, stream: SpdyStream) -> None:
        self._stream = stream

    async def write(self, data: bytes) -> None:
        await self._stream.write(data)

    async def close(self) -> None:
        await self._stream.close()


async def _serve_spdy(request: web.Request, *, opts: Options, run: Run, cmd: list[str] | None,
                      creation_limit: float) -> web.StreamResponse:
    resp, conn, protocol = await httpstream.upgrade(request, SPDY_PROTOCOLS)
    if conn is None:
        return resp
    try:
        streams = await _await_streams(conn, opts, protocol, creation_limit)
        if streams is None:
            return resp
        stdin = streams.get(STDIN)
        stdout = _SpdyOut(streams[STDOUT]) if STDOUT in streams else None
        stderr = _SpdyOut(streams[STDERR]) if STDERR in streams else None
        resize = resize_events(streams[RESIZE].read) if RESIZE in streams else no_resize()
        result, error = await _run_until_gone(
            run(stdin, stdout, stderr, resize), conn.wait_closed())
        if not conn.closed:
            err_stream = streams[ERROR]
            with contextlib.suppress(ConnectionError):
                payload = _error_payload(protocol, status(result, error, cmd=cmd))
                if payload:
                    await err_stream.write(payload)
                for s in streams.values():
                    await s.close()
    finally:
        await conn.close()
    return resp


async def _await_streams(conn: SpdyConnection, opts: Options, protocol: str,
                         creation_limit: float) -> dict[str, SpdyStream] | None:
    expected = {ERROR}
    if opts.stdin:
        expected.add(STDIN)
    if opts.stdout:
        expected.add(STDOUT)
    if opts.stderr:
        expected.add(STDERR)
    if opts.tty and protocol in ("v4.channel.k8s.io", "v3.channel.k8s.io"):
        expected.add(RESIZE)
    streams: dict[str, SpdyStream] = {}
    try:
        async with asyncio.timeout(creation_limit):
            while not expected <= streams.keys():
                stream = await conn.accept()
                if stream is None:
                    return None
                kind = stream.headers.get(STREAM_TYPE_HEADER, "")
                if kind not in (ERROR, STDIN, STDOUT, STDERR, RESIZE):
                    log.info("unexpected stream type %r", kind)
                    stream.reset()
                    continue
                streams[kind] = stream
    except TimeoutError:
        log.info("timed out waiting for client to create streams, got %s", sorted(streams))
        return None
    return streams


class _WsOut:
    def __init__(self, ws: web.WebSocketResponse, protocol: str, channel: int) -> None:
        self._ws, self._protocol, self._channel = ws, protocol, channel

    async def write(self, data: bytes) -> None:
        if self._ws.closed:
            raise ConnectionResetError("websocket closed")
        msg = wsstream.encode(self._protocol, self._channel, data)
        if isinstance(msg, str):
            await self._ws.send_str(msg)
        else:
            await self._ws.send_bytes(msg)

    async def close(self) -> None:
        return None  # the channel ends with the websocket


async def accept_websocket(request: web.Request, supported: tuple[str, ...],
                           default: str) -> tuple[web.StreamResponse, str, bool]:
    """Negotiate and prepare a channel WebSocket; (response, protocol, ok)."""
    offered = wsstream.offered_protocols(request.headers.get("Sec-WebSocket-Protocol"))
    chosen = wsstream.negotiate(offered, supported)
    if chosen is None:
        return web.Response(status=403, text=(
            f"requested protocol(s) are not supported: [{' '.join(offered)}]; "
            f"supports [{' '.join(supported)}]")), "", False
    ws = web.WebSocketResponse(protocols=[chosen] if chosen else (), max_msg_size=0)
    await ws.prepare(request)
    return ws, chosen or default, True


async def _serve_websocket(request: web.Request, *, opts: Options, run: Run,
                           cmd: list[str] | None) -> web.StreamResponse:
    ws_resp, protocol, ok = await accept_websocket(
        request, wsstream.REMOTE_COMMAND_PROTOCOLS, wsstream.V1)
    if not ok:
        return ws_resp
    assert isinstance(ws_resp, web.WebSocketResponse)
    ws = ws_resp
    stdin = asyncio.StreamReader(limit=1 << 30) if opts.stdin else None
    sizes: asyncio.Queue[TerminalSize | None] = asyncio.Queue()

    async def reader() -> None:
        decoder = json.JSONDecoder()
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                    continue
                try:
                    channel, data = wsstream.decode(protocol, msg.data)
                except ValueError:
                    continue
                if channel == wsstream.STDIN and stdin is not None and not stdin.at_eof():
                    stdin.feed_data(data)
                elif channel == wsstream.RESIZE and data:
                    with contextlib.suppress(ValueError):
                        obj, _ = decoder.raw_decode(data.decode().strip())
                        sizes.put_nowait(TerminalSize(width=int(obj.get("Width", 0)),
                                                      height=int(obj.get("Height", 0))))
                elif (channel == wsstream.CLOSE and protocol == wsstream.V5 and data
                      and data[0] == wsstream.STDIN and stdin is not None):
                    stdin.feed_eof()
        finally:
            if stdin is not None and not stdin.at_eof():
                stdin.feed_eof()
            sizes.put_nowait(None)

    async def resize() -> AsyncIterator[TerminalSize]:
        while (size := await sizes.get()) is not None:
            yield size

    read_task = asyncio.create_task(reader(), name="ws-remotecommand-reader")
    stdout = _WsOut(ws, protocol, wsstream.STDOUT) if opts.stdout else None
    stderr = _WsOut(ws, protocol, wsstream.STDERR) if opts.stderr else None
    error_out = _WsOut(ws, protocol, wsstream.ERROR)
    try:
        with contextlib.suppress(ConnectionError):
            await (stdout or stderr or error_out).write(b"")
        result, error = await _run_until_gone(
            run(stdin, stdout, stderr, resize() if opts.tty else no_resize()),
            asyncio.shield(read_task))
        if not ws.closed:
            with contextlib.suppress(ConnectionError):
                payload = _error_payload(protocol, status(result, error, cmd=cmd))
                if payload:
                    await error_out.write(payload)
    finally:
        await ws.close()
        read_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await read_task
    return ws
