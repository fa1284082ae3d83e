"""The kubelet API server over real HTTPS: authn (x509, bearer token via TokenReview),
authz (SubjectAccessReview), endpoints, logs, and the upgrade proxy for exec/attach."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kubenode.kubelet.server.providers import StreamRequest
from tests.kubelet_server.conftest import NODE, Kubelet
from tests.kubelet_server.pki import ClientCert
from tests.kubelet_server.test_logs import append


def tls(k: Kubelet, client: ClientCert | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(k.server_cert))
    if client is not None:
        ctx.load_cert_chain(str(client.cert), str(client.key))
    return ctx


async def get(k: Kubelet, path: str, client: ClientCert | None = None, *,
              method: str = "GET", headers: dict[str, str] | None = None
              ) -> tuple[int, str, Any]:
    async with aiohttp.ClientSession() as s, s.request(
            method, k.url + path, ssl=tls(k, client), headers=headers) as r:
        return r.status, await r.text(), r.headers


def pod_dict(name: str = "web", ns: str = "default", uid: str = "uid-1") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "uid": uid},
            "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "busybox"}]},
            "status": {"phase": "Running"}}


async def test_unauthenticated_is_401(kubelet: Kubelet) -> None:
    status, text, _ = await get(kubelet, "/pods")
    assert (status, text) == (401, "Unauthorized")
    status, _, _ = await get(kubelet, "/pods", headers={"Authorization": "Bearer wrong"})
    assert status == 401


async def test_forbidden_is_403_with_upstream_message(kubelet: Kubelet) -> None:
    status, text, _ = await get(kubelet, "/pods", kubelet.nobody)
    assert status == 403
    assert text == ("Forbidden (user=nobody, verb=get, resource=nodes, "
                    "subresource(s)=[proxy])")
    status, text, _ = await get(kubelet, "/exec/default/web/app?command=ls&stdout=1",
                                kubelet.nobody, method="POST")
    assert status == 403 and "verb=create" in text
    status, text, _ = await get(kubelet, "/stats/summary", kubelet.prometheus)
    assert status == 403 and "subresource(s)=[stats]" in text
    status, _, _ = await get(kubelet, "/metrics/cadvisor", kubelet.prometheus)
    assert status == 200


async def test_node_logs(kubelet: Kubelet) -> None:
    """/logs/ serves the node's log directory (authorized as nodes/log)."""
    status, text, _ = await get(kubelet, "/logs/", kubelet.admin)
    assert status == 200
    assert text == '<pre>\n<a href="apt/">apt/</a>\n<a href="syslog">syslog</a>\n</pre>\n'
    status, text, _ = await get(kubelet, "/logs/syslog", kubelet.admin)
    assert (status, text) == (200, "node booted\n")
    status, text, _ = await get(kubelet, "/logs/apt/history.log", kubelet.admin)
    assert (status, text) == (200, "Install: runc\n")
    status, text, _ = await get(kubelet, "/logs/apt", kubelet.admin)  # redirected to apt/
    assert status == 200 and "history.log" in text
    status, _, _ = await get(kubelet, "/logs/nothing-here", kubelet.admin)
    assert status == 404
    status, text, _ = await get(kubelet, "/logs/%2E%2E/secret.txt", kubelet.admin)
    assert status in (400, 404) and "outside" not in text
    status, text, _ = await get(kubelet, "/logs/syslog", kubelet.nobody)
    assert status == 403 and "subresource(s)=[log]" in text
    status, text, _ = await get(kubelet, "/logs/syslog",
                                headers={"Authorization": "Bearer alice-token"})
    assert (status, text) == (200, "node booted\n")


async def test_node_logs_off_with_enable_system_log_handler_false(
        kubelet: Kubelet, tmp_path: Path) -> None:
    from kubenode.kubelet.config import KubeletConfig, apply_file, load_file
    conf = tmp_path / "kubelet.yaml"
    conf.write_text("apiVersion: kubelet.config.k8s.io/v1beta1\n"
                    "kind: KubeletConfiguration\nenableSystemLogHandler: false\n")
    cfg = KubeletConfig(node_name=NODE)
    assert cfg.enable_system_log_handler
    apply_file(cfg, load_file(conf))
    assert not cfg.enable_system_log_handler
    # what the kubelet then passes to its server
    kubelet.server.config = dataclasses.replace(kubelet.server.config, node_logs_dir=None)
    status, text, _ = await get(kubelet, "/logs/syslog", kubelet.admin)
    assert status == 404 and "node booted" not in text


async def test_bearer_token_via_token_review(kubelet: Kubelet) -> None:
    kubelet.pods.api_pods = [pod_dict()]
    auth = {"Authorization": "Bearer alice-token"}
    status, text, _ = await get(kubelet, "/pods", headers=auth)
    assert status == 200
    assert json.loads(text)["items"][0]["metadata"]["name"] == "web"
    status, text, _ = await get(kubelet, "/metrics", headers=auth)
    assert status == 403 and "user=alice" in text and "[metrics]" in text


async def test_endpoints_as_admin(kubelet: Kubelet) -> None:
    k = kubelet
    k.pods.api_pods = [pod_dict()]
    status, text, _ = await get(k, "/healthz", k.admin)
    assert (status, text) == (200, "ok")
    async with aiohttp.ClientSession() as s, s.get(k.healthz_url + "/healthz") as r:
        assert (r.status, await r.text()) == (200, "ok")
    status, text, _ = await get(k, "/pods", k.admin)
    body = json.loads(text)
    assert body["kind"] == "PodList" and body["apiVersion"] == "v1"
    status, text, _ = await get(k, "/runningpods/", k.admin)
    assert json.loads(text)["items"][0]["spec"]["containers"] == [
        {"name": "app", "image": "busybox"}]
    status, text, _ = await get(k, "/configz", k.admin)
    cfg = json.loads(text)["kubeletconfig"]
    assert cfg["kind"] == "KubeletConfiguration" and "authentication" in cfg
    status, text, _ = await get(k, "/stats/summary", k.admin)
    summary = json.loads(text)
    assert status == 200 and summary["node"]["nodeName"] == NODE
    assert summary["node"]["memory"]["workingSetBytes"] > 0
    assert summary["node"]["cpu"]["usageCoreNanoSeconds"] > 0
    k.metrics.running_pods.set(3)
    k.metrics.runtime_operations.labels("list_containers").inc()
    status, text, headers = await get(k, "/metrics", k.admin)
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "kubelet_running_pods 3.0" in text
    assert 'kubelet_runtime_operations_total{operation_type="list_containers"} 1.0' in text
    status, text, _ = await get(k, "/metrics/resource", k.admin)
    assert "node_memory_working_set_bytes" in text and "scrape_error 0.0" in text
    status, text, _ = await get(k, "/metrics/probes", k.admin)
    assert status == 200 and "prober_probe_total" in text


async def test_container_logs(kubelet: Kubelet) -> None:
    k = kubelet
    cdir = k.logs_dir / "default_web_uid-1" / "app"
    cdir.mkdir(parents=True)
    (cdir / "0.log").write_text("2025-11-23T20:33:20.000000001Z stdout F old\n")
    (cdir / "1.log").write_text("2025-11-23T20:33:21.000000001Z stdout F a\n"
                                "2025-11-23T20:33:22.000000001Z stderr F b\n"
                                "2025-11-23T20:33:23.000000001Z stdout F c\n")
    base = "/containerLogs/default/web/app"
    assert (await get(k, base, k.admin))[1] == "a\nb\nc\n"
    assert (await get(k, base + "?tailLines=1&timestamps=true", k.admin))[1] == (
        "2025-11-23T20:33:23.000000001Z c\n")
    assert (await get(k, base + "?sinceTime=2025-11-23T20:33:22Z", k.admin))[1] == "b\nc\n"
    assert (await get(k, base + "?limitBytes=3", k.admin))[1] == "a\nb"
    assert (await get(k, base + "?previous=true", k.admin))[1] == "old\n"
    assert (await get(k, base + "?previous=true&follow=true", k.admin))[1] == "old\n"
    status, text, _ = await get(k, base + "?sinceSeconds=5&sinceTime=2025-11-23T20:33:22Z",
                                k.admin)
    assert status == 400 and "at most one of `sinceTime` or `sinceSeconds`" in text
    status, text, _ = await get(k, "/containerLogs/default/nope/app", k.admin)
    assert (status, text) == (404, 'pod "nope" does not exist')
    status, text, _ = await get(k, base + "?tailLines=-1", k.admin)
    assert status == 400


async def test_container_logs_follow_streams(kubelet: Kubelet) -> None:
    k = kubelet
    cdir = k.logs_dir / "default_web_uid-1" / "app"
    cdir.mkdir(parents=True)
    log = cdir / "0.log"
    log.write_text("2025-11-23T20:33:21.000000001Z stdout F first\n")
    async with aiohttp.ClientSession() as s, s.get(
            k.url + "/containerLogs/default/web/app?follow=true", ssl=tls(k, k.admin)) as r:
        assert r.status == 200
        assert await asyncio.wait_for(r.content.readline(), 5) == b"first\n"
        append(log, "2025-11-23T20:33:22.000000001Z stdout F second\n")
        assert await asyncio.wait_for(r.content.readline(), 5) == b"second\n"


class Streams:
    """StreamingProvider whose URLs point at a test backend."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.requests: list[StreamRequest] = []

    async def get_exec(self, req: StreamRequest) -> str:
        self.requests.append(req)
        return f"{self.base}/exec/tok123"

    async def get_attach(self, req: StreamRequest) -> str:
        self.requests.append(req)
        return f"{self.base}/attach/tok456"

    async def get_port_forward(self, req: StreamRequest) -> str:
        self.requests.append(req)
        return f"{self.base}/portforward/tok789"

    async def run_in_container(self, req: StreamRequest, *, exec_timeout: float) -> bytes:
        return ("ran: " + " ".join(req.command)).encode()


@pytest.fixture
async def raw_backend() -> AsyncIterator[tuple[str, list[bytes]]]:
    """An upgrade backend: answers 101 (SPDY/3.1) and echoes bytes uppercased."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                     b"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")
        while data := await reader.read(4096):
            writer.write(data.upper())
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", heads
    finally:
        srv.close()
        await srv.wait_closed()


async def test_exec_proxies_spdy_upgrade(kubelet: Kubelet,
                                         raw_backend: tuple[str, list[bytes]]) -> None:
    base, heads = raw_backend
    streams = Streams(base)
    kubelet.server.streaming = streams
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", kubelet.server.port, ssl=tls(kubelet, kubelet.admin),
        server_hostname="127.0.0.1")
    writer.write(b"POST /exec/default/web/app?command=sh&command=-c&command=echo+hi&stdin=1"
                 b"&stdout=1&tty=1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                 b"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
                 b"\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101")
    assert b"x-stream-protocol-version: v4.channel.k8s.io" in head.lower()
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"PING"
    writer.close()
    (req,) = streams.requests
    assert req.command == ("sh", "-c", "echo hi") and req.stdin and req.tty
    assert not req.stderr
    assert heads[0].startswith(b"POST /exec/tok123 HTTP/1.1")
    assert b"authorization" not in heads[0].lower()


async def test_port_forward_proxies_websocket(kubelet: Kubelet) -> None:
    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=["v4.channel.k8s.io"])
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_bytes(b"echo:" + msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/portforward/{tok}", ws_echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        streams = Streams(f"http://127.0.0.1:{port}")
        kubelet.server.streaming = streams
        async with aiohttp.ClientSession() as s, s.ws_connect(
                kubelet.url + "/portForward/default/web?port=8080",
                ssl=tls(kubelet, kubelet.admin), protocols=["v4.channel.k8s.io"]) as ws:
            assert ws.protocol == "v4.channel.k8s.io"
            await ws.send_bytes(b"\x00data")
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.data == b"echo:\x00data"
        assert streams.requests[0].ports == (8080,)
        status, text, _ = await get(kubelet, "/run/default/web/app?command=date",
                                    kubelet.admin, method="POST")
        assert (status, text) == (200, "ran: date")
        status, text, _ = await get(kubelet, "/exec/default/web/app?command=ls",
                                    kubelet.admin, method="POST")
        assert status == 400 and "at least 1 of stdin, stdout, stderr" in text
    finally:
        await runner.cleanup()


def test_pki_files_exist(tmp_path: Path) -> None:
    from tests.kubelet_server.pki import TestCA
    ca = TestCA(tmp_path)
    c = ca.client("x", "g1")
    ctx = ssl.create_default_context(cafile=str(ca.cert_file))
    ctx.load_cert_chain(str(c.cert), str(c.key))
