"""Probe kinds against real servers on 127.0.0.1: gRPC health (SERVING / NOT_SERVING),
httpGet (status codes, named ports, headers), tcpSocket (open / refused); and hostPath
type checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp import web

from kubenode.kubelet.prober.prober import run_probe
from kubenode.kubelet.volumes.manager import VolumeError, check_host_path
from kubenode.up import free_port


class _NoRuntime:
    """Probes other than exec never touch the runtime."""


async def _probe(probe: dict[str, Any], container: dict[str, Any] | None = None,
                 ) -> tuple[bool, str]:
    return await run_probe(probe, runtime=_NoRuntime(), container_id="",  # type: ignore[arg-type]
                           container=container or {"name": "c"}, pod_ip="127.0.0.1")


async def test_grpc_health_probe() -> None:
    status = {"": b"\x08\x01", "sick": b"\x08\x02"}

    def check(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        service = request[2:].decode() if request else ""
        return status[service]

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(
            check, request_deserializer=lambda b: b, response_serializer=lambda b: b)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        assert await _probe({"grpc": {"port": port}}) == (True, "")
        ok, out = await _probe({"grpc": {"port": port, "service": "sick"}})
        assert not ok and "NOT_SERVING" in out
    finally:
        await server.stop(0)
    ok, _ = await _probe({"grpc": {"port": free_port()}, "timeoutSeconds": 1})
    assert not ok


async def test_http_and_tcp_probes() -> None:
    seen: dict[str, str] = {}

    async def healthy(request: web.Request) -> web.Response:
        seen.update(request.headers)
        return web.Response(text="ok")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503, text="down")

    app = web.Application()
    app.router.add_get("/healthz", healthy)
    app.router.add_get("/broken", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        container = {"name": "c", "ports": [{"name": "http", "containerPort": port}]}
        assert (await _probe({"httpGet": {"path": "/healthz", "port": "http", "httpHeaders": [
            {"name": "X-Probe", "value": "1"}]}}, container))[0]
        assert seen["X-Probe"] == "1" and seen["User-Agent"].startswith("kube-probe/")
        assert await _probe({"httpGet": {"path": "/broken", "port": port}}) == \
            (False, "HTTP probe failed with statuscode: 503")
        assert (await _probe({"tcpSocket": {"port": port}}))[0]
    finally:
        await runner.cleanup()
    closed = free_port()
    assert await _probe({"tcpSocket": {"port": closed}}) == \
        (False, f"dial tcp 127.0.0.1:{closed}: connect: connection refused")


def test_host_path_types(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    check_host_path(str(f), "File")
    check_host_path(str(tmp_path), "Directory")
    check_host_path(str(tmp_path / "new" / "dir"), "DirectoryOrCreate")
    assert (tmp_path / "new" / "dir").is_dir()
    check_host_path(str(tmp_path / "made"), "FileOrCreate")
    assert (tmp_path / "made").is_file()
    with pytest.raises(VolumeError, match="is not a directory"):
        check_host_path(str(f), "Directory")
    with pytest.raises(VolumeError, match="is not a file"):
        check_host_path(str(tmp_path), "File")
    with pytest.raises(VolumeError, match="is not a socket file"):
        check_host_path(str(f), "Socket")
    check_host_path("/dev/null", "CharDevice")
