"""CRI Exec / Attach / PortForward against a real `kubenode runtime` (conmon-managed
containers in a CNI pod): the RPC answers a URL, our clients stream through it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest

from kubenode.cri import api_pb2 as pb
from kubenode.streaming import client
from kubenode.streaming.runner import TerminalSize
from tests.runtime.harness import (
    RuntimeProc,
    container_config,
    pod_config,
    remove_pod,
    run_container,
    run_pod,
    wait_exited,
)

pytestmark = pytest.mark.root

HTTPD = ("mkdir -p /tmp/w && echo hello from the pod > /tmp/w/i.txt && "
         "exec httpd -f -p 127.0.0.1:8080 -h /tmp/w")


@pytest.fixture(scope="module")
def pod(runtime: RuntimeProc) -> Iterator[tuple[str, pb.PodSandboxConfig, str]]:
    pcfg = pod_config(runtime)
    sid = run_pod(runtime, pcfg)
    try:
        cid = run_container(runtime, sid, pcfg, container_config("web", ["sh", "-c", HTTPD]))
        yield sid, pcfg, cid
    finally:
        remove_pod(runtime, sid)


async def test_exec_rpc(runtime: RuntimeProc, pod: tuple[str, pb.PodSandboxConfig, str]) -> None:
    _, _, cid = pod
    url = runtime.rt.Exec(pb.ExecRequest(
        container_id=cid[:12], cmd=["sh", "-c", "echo out; echo err >&2; exit 3"],
        stdout=True, stderr=True), timeout=10).url
    res = await client.exec_spdy(url)
    assert (res.exit_code, res.stdout, res.stderr) == (3, b"out\n", b"err\n")
    url = runtime.rt.Exec(pb.ExecRequest(container_id=cid, cmd=["cat"], stdin=True,
                                         stdout=True), timeout=10).url
    res = await client.exec_websocket(url, stdin=b"piped\n")
    assert (res.exit_code, res.stdout) == (0, b"piped\n")

    with pytest.raises(grpc.RpcError) as err:
        runtime.rt.Exec(pb.ExecRequest(container_id="nonexistent", cmd=["true"], stdout=True),
                        timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        runtime.rt.Exec(pb.ExecRequest(container_id=cid, cmd=["true"], tty=True, stdout=True,
                                       stderr=True), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_port_forward_rpc(runtime: RuntimeProc,
                                pod: tuple[str, pb.PodSandboxConfig, str]) -> None:
    sid, _, _ = pod
    url = runtime.rt.PortForward(pb.PortForwardRequest(pod_sandbox_id=sid, port=[8080]),
                                 timeout=10).url
    async with client.SpdyPortForwarder(url) as pf:

        async def get() -> bytes:
            conn = await pf.open(8080)
            await conn.write(b"GET /i.txt HTTP/1.0\r\n\r\n")
            out = bytearray()
            while chunk := await conn.read():
                out += chunk
            return bytes(out)

        for body in await asyncio.gather(*(get() for _ in range(5))):
            assert body.endswith(b"\r\n\r\nhello from the pod\n")
    with pytest.raises(grpc.RpcError) as err:
        runtime.rt.PortForward(pb.PortForwardRequest(pod_sandbox_id="nonexistent"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_attach_rpc(runtime: RuntimeProc,
                          pod: tuple[str, pb.PodSandboxConfig, str]) -> None:
    sid, pcfg, _ = pod
    cfg = container_config("att", ["sh", "-c", "read x; echo got $x; echo err >&2"])
    cfg.stdin = cfg.stdin_once = True
    cid = run_container(runtime, sid, pcfg, cfg)
    url = runtime.rt.Attach(pb.AttachRequest(container_id=cid, stdin=True, stdout=True,
                                             stderr=True), timeout=10).url
    res = await client.exec_spdy(url, stdin=b"hi\n")
    assert (res.exit_code, res.stdout, res.stderr) == (0, b"got hi\n", b"err\n")
    assert wait_exited(runtime, cid).exit_code == 0


async def test_attach_tty_with_resize(runtime: RuntimeProc,
                                      pod: tuple[str, pb.PodSandboxConfig, str]) -> None:
    sid, pcfg, _ = pod
    cfg = container_config("tty", ["sh", "-c", "read x; sleep 0.2; stty size"])
    cfg.stdin = cfg.stdin_once = cfg.tty = True
    cid = run_container(runtime, sid, pcfg, cfg)
    url = runtime.rt.Attach(pb.AttachRequest(container_id=cid, stdin=True, stdout=True,
                                             tty=True), timeout=10).url
    res = await client.exec_websocket(url, stdin=b"go\n", tty=True,
                                      resize=[TerminalSize(width=99, height=33)])
    assert res.exit_code == 0
    assert b"33 99" in res.stdout, res.stdout
