"""Interop with real kubectl: `kubectl exec` (1.27: SPDY/3.1; 1.33: WebSocket v5) and
`kubectl port-forward` (1.27: SPDY) against our remotecommand/portforward servers.

Until the API server proxies to a kubelet, a small stand-in answers the two API
calls kubectl makes (GET the pod, then the upgrade on pods/<name>/exec|portforward)
and serves the upgraded connection with our server code, as the kubelet will."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from kubenode.runtime.streaming import RuncStreamingRuntime
from kubenode.streaming import portforward, remotecommand
from kubenode.streaming.runner import InputStream, OutputStream, TerminalSize

from .conftest import Container
from .test_streaming_server import httpd_in_netns

pytestmark = pytest.mark.root

KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl.{}"


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "") in ("1", "true")


@pytest.fixture
async def apiserver(container: Container, tmp_path: Path) -> AsyncIterator[Path]:
    """Yields the kubeconfig; <dir>/upgrades lists the Upgrade header of each session."""
    runtime = RuncStreamingRuntime(runc_root=container.runc_root,
                                   sandbox_netns=lambda _sid: container.netns_path)
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]},
           "status": {"phase": "Running"}}

    async def get_pod(request: web.Request) -> web.Response:
        return web.json_response(pod)

    def note_upgrade(request: web.Request) -> None:
        with (tmp_path / "upgrades").open("a") as f:
            f.write(request.headers.get("Upgrade", "") + "\n")

    async def exec_(request: web.Request) -> web.StreamResponse:
        note_upgrade(request)
        cmd = request.query.getall("command", [])
        tty = _flag(request, "tty")
        opts = remotecommand.Options(stdin=_flag(request, "stdin"),
                                     stdout=_flag(request, "stdout"),
                                     stderr=_flag(request, "stderr") and not tty, tty=tty)

        async def run(stdin: InputStream | None, stdout: OutputStream | None,
                      stderr: OutputStream | None, resize: AsyncIterator[TerminalSize]) -> int:
            return await runtime.exec(container.id, cmd, tty=tty, stdin=stdin, stdout=stdout,
                                      stderr=stderr, resize=resize)

        return await remotecommand.serve(request, opts=opts, run=run, cmd=cmd)

    async def portforward_(request: web.Request) -> web.StreamResponse:
        note_upgrade(request)
        return await portforward.serve(request, pod="p", connect=lambda port:
                                       runtime.port_forward("sb", port))

    async def api(request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIVersions", "versions": ["v1"],
                                  "serverAddressByClientCIDRs": []})

    async def apis(request: web.Request) -> web.Response:
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    async def api_v1(request: web.Request) -> web.Response:
        verbs = ["get", "list"]
        return web.json_response({
            "kind": "APIResourceList", "groupVersion": "v1", "resources": [
                {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod",
                 "verbs": verbs, "shortNames": ["po"]},
                {"name": "pods/exec", "singularName": "", "namespaced": True,
                 "kind": "PodExecOptions", "verbs": ["create", "get"]},
                {"name": "pods/portforward", "singularName": "", "namespaced": True,
                 "kind": "PodPortForwardOptions", "verbs": ["create", "get"]},
            ]})

    app = web.Application()
    app.router.add_get("/api", api)
    app.router.add_get("/apis", apis)
    app.router.add_get("/api/v1", api_v1)
    app.router.add_get("/api/v1/namespaces/default/pods/p", get_pod)
    app.router.add_route("*", "/api/v1/namespaces/default/pods/p/exec", exec_)
    app.router.add_route("*", "/api/v1/namespaces/default/pods/p/portforward", portforward_)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u, namespace: default}}}}]
current-context: c
""")
    try:
        yield kubeconfig
    finally:
        await runner.cleanup()


async def kubectl(version: str, kubeconfig: Path, *args: str,
                  stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        KUBECTL.format(version), "--kubeconfig", str(kubeconfig), *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HOME": str(kubeconfig.parent)})
    try:
        async with asyncio.timeout(30):
            out, err = await proc.communicate(stdin)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out, err


@pytest.mark.parametrize("version", ["1.27", "1.33"])
async def test_kubectl_exec(apiserver: Path, version: str) -> None:
    code, out, err = await kubectl(version, apiserver, "exec", "p", "--", "sh", "-c",
                                   "echo out; echo err >&2; exit 3")
    assert (code, out) == (3, b"out\n"), err
    assert err.startswith(b"err\n") and b"command terminated with exit code 3" in err

    data = secrets.token_hex(50_000).encode()
    code, out, err = await kubectl(version, apiserver, "exec", "-i", "p", "--", "cat",
                                   stdin=data)
    assert code == 0, err
    assert out == data
    upgrades = (apiserver.parent / "upgrades").read_text().split()
    assert upgrades == ["SPDY/3.1" if version == "1.27" else "websocket"] * 2


@pytest.mark.parametrize("version", ["1.27", "1.33"])
async def test_kubectl_port_forward(apiserver: Path, container: Container, version: str) -> None:
    port = 20000 + secrets.randbelow(1000)
    local = 21000 + secrets.randbelow(1000)
    with httpd_in_netns(container, port) as root:
        proc = await asyncio.create_subprocess_exec(
            KUBECTL.format(version), "--kubeconfig", str(apiserver), "port-forward",
            "--address", "127.0.0.1", "pod/p", f"{local}:{port}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "HOME": str(apiserver.parent)})
        try:
            assert proc.stdout is not None
            async with asyncio.timeout(20):
                line = await proc.stdout.readline()
            assert b"Forwarding from 127.0.0.1" in line, line

            async def get(i: int) -> bytes:
                r, w = await asyncio.open_connection("127.0.0.1", local)
                w.write(f"GET /f{i}.txt HTTP/1.0\r\n\r\n".encode())
                body = await r.read()
                w.close()
                return body

            async with asyncio.timeout(20):
                bodies = await asyncio.gather(*(get(i) for i in range(10)))
            for i, body in enumerate(bodies):
                assert body.endswith((root / f"f{i}.txt").read_bytes()), body[:200]
        finally:
            proc.kill()
            await proc.wait()
