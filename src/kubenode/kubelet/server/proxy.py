"""Upgrade-aware proxy to the runtime's streaming server (upstream proxyStream /
UpgradeAwareHandler), protocol-agnostic: SPDY/3.1 and WebSocket both ride on it.

Contract: `await proxy_stream(request, url)`:
1. connects to `url` (http or https), sends the client's request line and headers (Host
   rewritten, Authorization dropped, path+query from `url`);
2. reads the backend's response head; a non-101 answer is relayed as an ordinary
   response (status, headers, body);
3. on 101 Switching Protocols it sends the same 101 head to the client and relays raw
   bytes both ways until either side closes, then closes both.
The client connection is taken over from aiohttp through its protocol's payload-parser
hook (what aiohttp's own WebSocketResponse does). aiohttp only knows "websocket" as an
upgrade: for SPDY/3.1, bytes the client sends before it has read the 101 would be parsed
as HTTP; SPDY clients (kubectl, client-go) wait for the 101 first, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from multidict import CIMultiDict

log = logging.getLogger(__name__)

_HOP = {"host", "authorization", "content-length"}


class _RawReader:
    """aiohttp payload-parser hook: bytes after the upgrade go into a queue."""

    def __init__(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._q = queue

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self._q.put_nowait(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        self._q.put_nowait(None)


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, CIMultiDict[str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    _, code, *reason = lines[0].split(" ", 2)
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers.add(k.strip(), v.strip())
    return int(code), reason[0] if reason else "", headers


async def proxy_stream(request: web.Request, url: str) -> web.StreamResponse:
    u = urlsplit(url)
    tls: ssl.SSLContext | None = None
    if u.scheme == "https":
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE  # the runtime's stream server is local
    port = u.port or (443 if u.scheme == "https" else 80)
    try:
        reader, writer = await asyncio.open_connection(u.hostname, port, ssl=tls)
    except OSError as err:
        raise web.HTTPInternalServerError(text=f"error dialing backend: {err}") from err
    try:
        path = u.path + (f"?{u.query}" if u.query else "")
        head = [f"{request.method} {path} HTTP/1.1", f"Host: {u.netloc}"]
        head += [f"{k}: {v}" for k, v in request.headers.items() if k.lower() not in _HOP]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if request.can_read_body and not request.headers.get("Upgrade"):
            writer.write(await request.read())
        await writer.drain()
        code, reason, headers = await _read_head(reader)
        if code != 101:
            body = await _read_body(reader, headers)
            resp_headers = {k: v for k, v in headers.items()
                            if k.lower() not in ("transfer-encoding", "content-length",
                                                 "connection")}
            return web.Response(status=code, reason=reason or None, body=body,
                                headers=resp_headers)
        resp = web.StreamResponse(status=101, reason=reason or "Switching Protocols")
        for k, v in headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "date", "server"):
                resp.headers.add(k, v)
        resp.force_close()
        await resp.prepare(request)
        await _relay(request, reader, writer)
        return resp
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _read_body(reader: asyncio.StreamReader, headers: CIMultiDict[str]) -> bytes:
    if "Content-Length" in headers:
        return await reader.readexactly(int(headers["Content-Length"]))
    if headers.get("Transfer-Encoding", "").lower() == "chunked":
        out = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return bytes(out)
            out += await reader.readexactly(size)
            await reader.readline()
    return await reader.read()


async def _relay(request: web.Request, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    proto: Any = request.protocol
    proto.set_parser(_RawReader(queue))
    transport = request.transport
    assert transport is not None

    async def client_to_backend() -> None:
        while True:
            data = await queue.get()
            if data is None:
                return
            writer.write(data)
            await writer.drain()

    async def backend_to_client() -> None:
        while True:
            data = await reader.read(64 << 10)
            if not data or transport.is_closing():
                return
            transport.write(data)
            while (transport.get_write_buffer_size() > (1 << 20)  # noqa: ASYNC110
                   and not transport.is_closing()):
                await asyncio.sleep(0.005)

    tasks = [asyncio.create_task(client_to_backend(), name="proxy-up"),
             asyncio.create_task(backend_to_client(), name="proxy-down")]
    try:
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if tasks[0].done() and not tasks[1].done():
            # client closed its sending side: let the backend finish (short grace)
            with contextlib.suppress(Exception):
                writer.write_eof()
            await asyncio.wait(pending, timeout=5)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        transport.close()
