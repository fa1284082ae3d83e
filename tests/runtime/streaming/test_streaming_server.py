"""End to end: the runtime's streaming server with a real runc container, driven by our
SPDY and WebSocket clients (exec, tty + resize, stdin, port-forward, tokens)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from kubenode.cri import api_pb2 as pb
from kubenode.runtime.streaming import RuncStreamingRuntime, StreamingError, StreamingServer
from kubenode.streaming import client
from kubenode.streaming.runner import TerminalSize

from .conftest import Container

pytestmark = pytest.mark.root

PROTOCOLS = ["spdy", "v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io"]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def server(container: Container, clock: Clock) -> AsyncIterator[StreamingServer]:
    runtime = RuncStreamingRuntime(runc_root=container.runc_root,
                                   sandbox_netns=lambda _sid: container.netns_path)
    srv = StreamingServer(runtime=runtime, address="127.0.0.1", port=0, now=clock)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def run_exec(url: str, proto: str, **kw: object) -> client.ExecResult:
    if proto == "spdy":
        return await client.exec_spdy(url, **kw)  # type: ignore[arg-type]
    return await client.exec_websocket(url, protocols=[proto], **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("proto", PROTOCOLS)
async def test_exec_exit_code_and_streams(server: StreamingServer, container: Container,
                                          proto: str) -> None:
    url = server.get_exec_url(pb.ExecRequest(
        container_id=container.id, cmd=["sh", "-c", "echo out; echo err >&2; exit 3"],
        stdout=True, stderr=True))
    res = await run_exec(url, proto)
    assert (res.exit_code, res.stdout, res.stderr) == (3, b"out\n", b"err\n")
    assert res.status["reason"] == "NonZeroExitCode"
    assert res.status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]

    url = server.get_exec_url(pb.ExecRequest(
        container_id=container.id, cmd=["sh", "-c", "echo ok"], stdout=True, stderr=True))
    res = await run_exec(url, proto)
    assert (res.exit_code, res.stdout, res.status["status"]) == (0, b"ok\n", "Success")


@pytest.mark.parametrize("proto", ["spdy", "v5.channel.k8s.io"])
async def test_exec_stdin_piped_to_cat(server: StreamingServer, container: Container,
                                       proto: str) -> None:
    data = os.urandom(150_000)  # more than a SPDY window, so WINDOW_UPDATEs flow
    url = server.get_exec_url(pb.ExecRequest(
        container_id=container.id, cmd=["cat"], stdin=True, stdout=True, stderr=True))
    res = await run_exec(url, proto, stdin=data)
    assert res.exit_code == 0
    assert res.stdout == data


@pytest.mark.parametrize("proto", ["spdy", "v5.channel.k8s.io", "v4.channel.k8s.io"])
async def test_exec_tty_with_resize(server: StreamingServer, container: Container,
                                    proto: str) -> None:
    url = server.get_exec_url(pb.ExecRequest(
        container_id=container.id, cmd=["sh", "-c", "read x; sleep 0.2; stty size; exit 7"],
        tty=True, stdin=True, stdout=True))
    res = await run_exec(url, proto, stdin=b"go\n", tty=True, stderr=False,
                         resize=[TerminalSize(width=123, height=45)])
    assert res.exit_code == 7
    assert b"45 123\r\n" in res.stdout, res.stdout


async def test_exec_unknown_container_reports_failure(server: StreamingServer) -> None:
    url = server.get_exec_url(pb.ExecRequest(container_id="nope", cmd=["true"], stdout=True))
    with pytest.raises(client.StreamError, match="not found"):
        await client.exec_spdy(url, stderr=False)


async def test_tokens_are_single_use_and_expire(server: StreamingServer, container: Container,
                                               clock: Clock) -> None:
    req = pb.ExecRequest(container_id=container.id, cmd=["true"], stdout=True)
    url = server.get_exec_url(req)
    assert url.startswith(f"http://127.0.0.1:{server.port}/exec/")
    assert (await client.exec_spdy(url, stderr=False)).exit_code == 0
    async with aiohttp.ClientSession() as s:
        async with s.post(url) as r:
            assert r.status == 404  # used
        stale = server.get_exec_url(req)
        clock.t += 61
        async with s.post(stale) as r:
            assert r.status == 404  # expired after 1 minute
        fresh = server.get_exec_url(req)
        clock.t += 59
        async with s.get(fresh.replace("/exec/", "/attach/")) as r:
            assert r.status == 404  # a token is for its own verb only
        async with s.get(f"{server.base_url}/exec/unknown") as r:
            assert r.status == 404
    with pytest.raises(client.UpgradeError) as err:
        await client.exec_spdy(server.get_exec_url(req), stderr=False,
                               protocols=["v9.channel.k8s.io"])
    assert err.value.status == 403


def test_invalid_requests_are_refused_with_grpc_codes() -> None:
    srv = StreamingServer(runtime=None)  # type: ignore[arg-type]
    cases = [
        (pb.ExecRequest(cmd=["true"], stdout=True), "missing required container_id"),
        (pb.ExecRequest(container_id="c", cmd=["true"], tty=True, stdout=True, stderr=True),
         "tty and stderr cannot both be true"),
        (pb.ExecRequest(container_id="c", cmd=["true"]),
         "one of stdin, stdout, or stderr must be set"),
    ]
    for req, msg in cases:
        with pytest.raises(StreamingError, match=msg) as err:
            srv.get_exec_url(req)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(StreamingError, match="pod_sandbox_id"):
        srv.get_portforward_url(pb.PortForwardRequest())


@contextlib.contextmanager
def httpd_in_netns(container: Container, port: int) -> Iterator[Path]:
    root = container.tmp / f"www-{port}"
    root.mkdir()
    for i in range(20):
        (root / f"f{i}.txt").write_text(f"file {i} {secrets.token_hex(8)}\n" * 50)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", container.netns, "busybox", "httpd", "-f",
         "-p", f"127.0.0.1:{port}", "-h", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            probe = subprocess.run(
                ["ip", "netns", "exec", container.netns, "busybox", "nc", "127.0.0.1",
                 str(port)], stdin=subprocess.DEVNULL, capture_output=True, check=False)
            if probe.returncode == 0:
                break
            assert proc.poll() is None, "httpd exited"
            subprocess.run(["sleep", "0.05"], check=True)
        yield root
    finally:
        proc.kill()
        proc.wait()


async def http_get(conn: client.PortForwardConnection, path: str) -> bytes:
    await conn.write(f"GET /{path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    out = bytearray()
    while chunk := await conn.read(65536):
        out += chunk
    return bytes(out)


async def test_port_forward_spdy_20_concurrent(server: StreamingServer,
                                               container: Container) -> None:
    port = 18000 + secrets.randbelow(1000)
    with httpd_in_netns(container, port) as root:
        url = server.get_portforward_url(pb.PortForwardRequest(pod_sandbox_id="sb", port=[port]))
        async with client.SpdyPortForwarder(url) as pf:
            conns = [await pf.open(port) for _ in range(20)]
            bodies = await asyncio.gather(*(http_get(c, f"f{i}.txt") for i, c in enumerate(conns)))
            for i, body in enumerate(bodies):
                assert body.startswith(b"HTTP/1.") and b" 200 " in body.split(b"\r\n")[0]
                assert body.endswith((root / f"f{i}.txt").read_bytes())
            for c in conns:
                assert await c.error() == ""
            refused = await pf.open(port + 1)  # nothing listens there
            assert await refused.read() == b""
            assert f"error forwarding port {port + 1} to pod sb" in await refused.error()


async def test_port_forward_websocket_20_concurrent(server: StreamingServer,
                                                    container: Container) -> None:
    port = 19000 + secrets.randbelow(1000)
    with httpd_in_netns(container, port) as root:
        async def one(i: int) -> None:
            url = server.get_portforward_url(
                pb.PortForwardRequest(pod_sandbox_id="sb", port=[port]))
            conn = await client.websocket_port_forward(url)
            try:
                body = await http_get(conn, f"f{i}.txt")
                assert b" 200 " in body.split(b"\r\n")[0]
                assert body.endswith((root / f"f{i}.txt").read_bytes())
            finally:
                await conn.aclose()

        await asyncio.gather(*(one(i) for i in range(20)))
        url = server.get_portforward_url(pb.PortForwardRequest(pod_sandbox_id="sb"))
        conn = await client.websocket_port_forward(url, port + 1)
        try:
            assert await conn.read() == b""
            assert f"error forwarding port {port + 1}" in await conn.error()
        finally:
            await conn.aclose()


def _procs_with(marker: str) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in Path(f"/proc/{p}/cmdline").read_bytes():
                    out.append(int(p))
    return out


@pytest.mark.parametrize("tty", [False, True])
async def test_client_going_away_ends_the_exec(server: StreamingServer, container: Container,
                                               tty: bool) -> None:
    marker = str(100000 + secrets.randbelow(800000))
    url = server.get_exec_url(pb.ExecRequest(
        container_id=container.id, cmd=["sleep", marker], stdout=True, tty=tty))
    task = asyncio.create_task(client.exec_spdy(url, stdin=None, stderr=False, tty=tty))
    for _ in range(100):
        if _procs_with(f"sleep\0{marker}"):
            break
        await asyncio.sleep(0.05)
    assert _procs_with(f"sleep\0{marker}"), "exec never started"
    task.cancel()  # drops the connection
    with contextlib.suppress(asyncio.CancelledError):
        await task
    for _ in range(100):
        if not _procs_with(marker):
            break
        await asyncio.sleep(0.05)
    assert not _procs_with(marker), "runc exec / the process outlived the session"
