"""Server side of port-forward (upstream: kubelet/cri/streaming/portforward), over
SPDY/3.1 (`portforward.k8s.io`) or WebSocket (v4 channel protocols).

SPDY: one connection carries many forwarded TCP connections. For each, the client
opens two streams with the headers `streamType` (error, then data), `port` and
`requestID`; when both of a requestID are there we call `connect(port)` and copy bytes
both ways until the pod side closes. Failures are written as text on the error stream:
"error forwarding port <p> to pod <id>, uid : <why>". The session ends when the client
closes the connection.

WebSocket: one connection forwards one TCP connection per requested port (query
parameter `port`, repeated; otherwise the ports of the CRI request). Channel 2i is the
data of port i, 2i+1 its errors; we start each with the port as 2 little-endian
bytes. The session ends when all pod connections have closed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import WSMsgType, web

from kubenode.streaming import httpstream, wsstream
from kubenode.streaming.remotecommand import accept_websocket
from kubenode.streaming.spdy import SpdyConnection, SpdyStream

log = logging.getLogger(__name__)

SPDY_PROTOCOLS = ("portforward.k8s.io",)
Connect = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def _forward_error(pod: str, port: int, err: BaseException) -> str:
    return f"error forwarding port {port} to pod {pod}, uid : {err}"


async def serve(request: web.Request, *, pod: str, connect: Connect,
                ports: Sequence[int] = ()) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await _serve_websocket(request, pod=pod, connect=connect, ports=ports)
    resp, conn, _protocol = await httpstream.upgrade(request, SPDY_PROTOCOLS)
    if conn is None:
        return resp
    try:
        await _serve_spdy(conn, pod=pod, connect=connect)
    finally:
        await conn.close()
    return resp


async def _serve_spdy(conn: SpdyConnection, *, pod: str, connect: Connect) -> None:
    pending: dict[str, dict[str, SpdyStream]] = {}
    tasks: set[asyncio.Task[None]] = set()
    try:
        while (stream := await conn.accept()) is not None:
            kind = stream.headers.get("streamtype", "")
            request_id = stream.headers.get("requestid") or str(
                stream.id if kind == "error" else stream.id - 2)
            if kind not in ("data", "error"):
                stream.reset()
                continue
            pair = pending.setdefault(request_id, {})
            pair[kind] = stream
            if len(pair) == 2:
                del pending[request_id]
                task = asyncio.create_task(
                    _forward_pair(pair["data"], pair["error"], pod=pod, connect=connect),
                    name=f"portforward {pod} {request_id}")
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _forward_pair(data: SpdyStream, error: SpdyStream, *, pod: str,
                        connect: Connect) -> None:
    port_header = data.headers.get("port", "")
    try:
        port = int(port_header)
        if not 0 < port < 65536:
            raise ValueError(port_header)
    except ValueError:
        with contextlib.suppress(ConnectionError):
            await error.write(f'invalid port header "{port_header}"'.encode())
            await error.close()
        data.reset()
        return
    try:
        reader, writer = await connect(port)
    except Exception as err:  # any failure to connect is reported on the error stream
        with contextlib.suppress(ConnectionError):
            await error.write(_forward_error(pod, port, err).encode())
            await error.close()
        await data.close()
        return
    try:
        await copy_both_ways(data.read, data.write, data.close, reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await error.close()


async def copy_both_ways(
    read_client: Callable[[int], Awaitable[bytes]],
    write_client: Callable[[bytes], Awaitable[None]],
    close_client: Callable[[], Awaitable[None]] | None,
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
) -> None:
    """Copy client -> pod (then half-close the pod socket) and pod -> client (then
    close the client side) until the pod side ends."""

    async def upstream() -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await read_client(65536):
                writer.write(chunk)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

    up = asyncio.create_task(upstream())
    try:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                await write_client(chunk)
            if close_client is not None:
                await close_client()
    finally:
        up.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await up


async def _serve_websocket(request: web.Request, *, pod: str, connect: Connect,
                           ports: Sequence[int]) -> web.StreamResponse:
    try:
        query_ports = [int(p) for p in request.query.getall("port", [])]
    except ValueError:
        return web.Response(status=400, text="invalid port in query parameter \"port\"")
    ports = query_ports or list(ports)
    if not ports:
        return web.Response(status=400, text='query parameter "port" is required')
    resp, protocol, ok = await accept_websocket(
        request, wsstream.PORT_FORWARD_PROTOCOLS, wsstream.V1)
    if not ok:
        return resp
    assert isinstance(resp, web.WebSocketResponse)
    ws = resp
    inputs = [asyncio.StreamReader(limit=1 << 30) for _ in ports]

    async def send(channel: int, data: bytes) -> None:
        if ws.closed:
            raise ConnectionResetError("websocket closed")
        msg = wsstream.encode(protocol, channel, data)
        await (ws.send_str(msg) if isinstance(msg, str) else ws.send_bytes(msg))

    async def reader() -> None:
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                    continue
                with contextlib.suppress(ValueError):
                    channel, data = wsstream.decode(protocol, msg.data)
                    if channel % 2 == 0 and channel // 2 < len(inputs) and data:
                        inputs[channel // 2].feed_data(data)
        finally:
            for inp in inputs:
                if not inp.at_eof():
                    inp.feed_eof()

    async def forward(i: int, port: int) -> None:
        try:
            r, w = await connect(port)
        except Exception as err:  # any failure to connect is reported on the error stream
            with contextlib.suppress(ConnectionError):
                await send(2 * i + 1, _forward_error(pod, port, err).encode())
            return
        try:
            await copy_both_ways(inputs[i].read, lambda d: send(2 * i, d), None, r, w)
        finally:
            w.close()

    read_task = asyncio.create_task(reader(), name="ws-portforward-reader")
    try:
        for i, port in enumerate(ports):
            prefix = struct.pack("<H", port)
            await send(2 * i, prefix)
            await send(2 * i + 1, prefix)
        work: asyncio.Future[list[None]] = asyncio.gather(
            *(forward(i, p) for i, p in enumerate(ports)))
        waiters: set[asyncio.Future[object]] = {work, read_task}  # type: ignore[arg-type]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            work.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await work
    except ConnectionError:
        pass
    finally:
        await ws.close()
        read_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await read_task
    return ws
