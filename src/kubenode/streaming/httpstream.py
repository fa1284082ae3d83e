"""The HTTP/1.1 upgrade to SPDY/3.1 (upstream: apimachinery httpstream.Handshake and
httpstream/spdy's upgrader and round tripper), server side on aiohttp and client side
on a raw asyncio connection.

Handshake: the client sends `Connection: Upgrade`, `Upgrade: SPDY/3.1` and one
`X-Stream-Protocol-Version` per sub-protocol it speaks, most preferred first. The
server picks the first the client offered that it supports and answers `101 Switching
Protocols` with the same upgrade headers and `X-Stream-Protocol-Version: <chosen>`;
both sides then speak SPDY on the connection. No match: `403 Forbidden` and
`X-Accepted-Stream-Protocol-Versions`. No upgrade headers: `400 Bad Request`."""

from __future__ import annotations

import asyncio
import contextlib
import ssl as ssl_mod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web

from kubenode.streaming.spdy import SpdyConnection, SpdyProtocol

UPGRADE = "SPDY/3.1"
PROTOCOL_HEADER = "X-Stream-Protocol-Version"
ACCEPTED_PROTOCOLS_HEADER = "X-Accepted-Stream-Protocol-Versions"


class UpgradeError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"unable to upgrade connection: {status} {body}".strip())
        self.status = status
        self.body = body


def is_spdy_request(request: web.BaseRequest) -> bool:
    conn = {t.strip().lower() for t in request.headers.get("Connection", "").split(",")}
    return "upgrade" in conn and request.headers.get("Upgrade", "").lower() == UPGRADE.lower()


def client_protocols(request: web.BaseRequest) -> list[str]:
    return [p.strip() for h in request.headers.getall(PROTOCOL_HEADER, [])
            for p in h.split(",") if p.strip()]


async def upgrade(
    request: web.BaseRequest, supported: Sequence[str]
) -> tuple[web.StreamResponse, SpdyConnection | None, str]:
    """Answer the upgrade. Returns (response, connection, protocol); the connection is
    None when the upgrade was refused (the response then says why)."""
    offered = client_protocols(request)
    chosen = next((p for p in offered if p in supported), None) if offered else ""
    if chosen is None:
        refused = web.Response(
            status=403, text=(
                "unable to upgrade: unable to negotiate protocol: client supports "
                f"[{' '.join(offered)}], server supports [{' '.join(supported)}]"))
        for p in supported:
            refused.headers.add(ACCEPTED_PROTOCOLS_HEADER, p)
        return refused, None, ""
    if not is_spdy_request(request):
        return web.Response(
            status=400, text="unable to upgrade: missing upgrade headers in request"), None, ""
    transport = request.transport
    if transport is None:
        return web.Response(status=500, text="connection already closed"), None, ""
    headers = {"Connection": "Upgrade", "Upgrade": UPGRADE}
    if chosen:
        headers[PROTOCOL_HEADER] = chosen
    resp = web.StreamResponse(status=101, reason="Switching Protocols", headers=headers)
    await resp.prepare(request)
    proto = SpdyProtocol(transport, server=True)
    transport.set_protocol(proto)
    transport.resume_reading()
    return resp, proto.conn, chosen


@dataclass(kw_only=True)
class ClientConnection:
    """A client SPDY connection and the task that feeds it."""

    conn: SpdyConnection
    protocol: str
    writer: asyncio.StreamWriter
    reader_task: asyncio.Task[None] = field(repr=False)

    async def aclose(self) -> None:
        await self.conn.close()
        self.reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader_task
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def connect(
    url: str, protocols: Sequence[str], *, method: str = "POST",
    headers: Mapping[str, str] | None = None, ssl: ssl_mod.SSLContext | None = None,
    connect_timeout: float = 30.0,
) -> ClientConnection:
    """Open an HTTP(S) connection to `url` and upgrade it to SPDY/3.1."""
    u = urlsplit(url)
    secure = u.scheme in ("https", "wss")
    port = u.port or (443 if secure else 80)
    host = u.hostname or "localhost"
    async with asyncio.timeout(connect_timeout):
        reader, writer = await asyncio.open_connection(
            host, port, ssl=(ssl or ssl_mod.create_default_context()) if secure else None)
        try:
            target = (u.path or "/") + (f"?{u.query}" if u.query else "")
            lines = [f"{method} {target} HTTP/1.1", f"Host: {u.netloc}",
                     "Connection: Upgrade", f"Upgrade: {UPGRADE}", "Content-Length: 0"]
            lines += [f"{PROTOCOL_HEADER}: {p}" for p in protocols]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            status_line, *header_lines = head.split("\r\n")
            status = int(status_line.split()[1])
            resp_headers = {}
            for line in header_lines:
                if ":" in line:
                    k, v = line.split(":", 1)
                    resp_headers[k.strip().lower()] = v.strip()
            if status != 101:
                length = int(resp_headers.get("content-length", "0") or 0)
                body = (await reader.readexactly(length)) if length else b""
                raise UpgradeError(status, body.decode(errors="replace"))
        except BaseException:
            writer.close()
            raise
    conn = SpdyConnection(writer, server=False)

    async def pump() -> None:
        try:
            while data := await reader.read(65536):
                conn.data_received(data)
        except (ConnectionError, OSError):
            pass
        finally:
            conn.connection_lost(None)
            writer.close()

    task = asyncio.create_task(pump(), name=f"spdy-client-reader {url}")
    return ClientConnection(conn=conn, protocol=resp_headers.get(PROTOCOL_HEADER.lower(), ""),
                            writer=writer, reader_task=task)
