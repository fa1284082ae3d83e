"""pods/log and nodes/proxy through the API server to the real kubelet API server
(`kubenode.kubelet.server.KubeletServer`, run here in-process with a log file in CRI
format), with real kubectl."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from kubenode.kubelet.server.auth import AlwaysAllow
from kubenode.kubelet.server.providers import ContainerLog
from kubenode.kubelet.server.server import KubeletServer, KubeletServerConfig
from tests.fixtures.apiserver import APIServerProcess


class FileLogs:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def container_log(self, *, namespace: str, pod: str, container: str,
                            previous: bool) -> ContainerLog:
        return ContainerLog(path=str(self.path))


async def kubectl(server: APIServerProcess, *args: str, stdin: str | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        "kubectl", "--kubeconfig", str(server.kubeconfig), *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 30)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_logs_and_node_proxy_reach_the_kubelet(api_server: APIServerProcess,
                                                    tmp_path: Path) -> None:
    log_file = tmp_path / "0.log"
    log_file.write_text("2026-01-01T00:00:00.000000000Z stdout F hello from c\n"
                        "2026-01-01T00:00:01.000000000Z stderr F second line\n")
    kubelet = KubeletServer(
        config=KubeletServerConfig(node_name="n1", address="127.0.0.1", port=0,
                                   healthz_port=-1, cert_dir=str(tmp_path / "pki"),
                                   client_ca_file=str(api_server.ca_cert)),
        now=time.time, logs=FileLogs(log_file), authorizer=AlwaysAllow())
    await kubelet.start()
    try:
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                           "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.port}}}}
        await kubectl(api_server, "create", "-f", "-", stdin=json.dumps(node))
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lp"},
               "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}}
        await kubectl(api_server, "create", "-f", "-", stdin=json.dumps(pod))
        out = await kubectl(api_server, "logs", "lp")
        assert out == "hello from c\nsecond line\n"
        out = await kubectl(api_server, "logs", "lp", "--tail=1", "--timestamps")
        assert out == "2026-01-01T00:00:01.000000000Z second line\n"
        healthz = await kubectl(api_server, "get", "--raw", "/api/v1/nodes/n1/proxy/healthz")
        assert healthz.strip() == "ok"
    finally:
        await kubelet.stop()


class HostPortForward:
    """The kubelet's streaming provider, backed by the runtime's real streaming server;
    port-forward in the host network namespace (sandbox_netns -> None)."""

    def __init__(self, streaming: Any) -> None:
        self.streaming = streaming

    async def get_port_forward(self, req: Any) -> str:
        from kubenode.cri import api_pb2 as pb
        return str(self.streaming.get_portforward_url(pb.PortForwardRequest(
            pod_sandbox_id="sandbox-1")))

    async def get_exec(self, req: Any) -> str:
        raise NotImplementedError

    async def get_attach(self, req: Any) -> str:
        raise NotImplementedError

    async def run_in_container(self, req: Any, *, exec_timeout: float) -> bytes:
        raise NotImplementedError


@pytest.mark.parametrize("kubectl_bin", ["/usr/lib/google-cloud-sdk/bin/kubectl.1.27",
                                         "kubectl"])
async def test_port_forward_through_apiserver_kubelet_and_runtime(
        api_server: APIServerProcess, tmp_path: Path, kubectl_bin: str) -> None:
    """kubectl 1.27 speaks SPDY/3.1, 1.32 WebSocket: both are spliced to the kubelet."""
    from kubenode.runtime.streaming import RuncStreamingRuntime, StreamingServer
    from kubenode.up import free_port

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(100)
        writer.write(b"echo:" + data)
        await writer.drain()
        writer.close()

    target = await asyncio.start_server(echo, "127.0.0.1", 0)
    target_port = target.sockets[0].getsockname()[1]
    streaming = StreamingServer(runtime=RuncStreamingRuntime(
        runc_root=tmp_path / "runc", sandbox_netns=lambda _sid: None))
    await streaming.start()
    kubelet = KubeletServer(
        config=KubeletServerConfig(node_name="n2", address="127.0.0.1", port=0,
                                   healthz_port=-1, cert_dir=str(tmp_path / "pki"),
                                   client_ca_file=str(api_server.ca_cert)),
        now=time.time, streaming=HostPortForward(streaming), authorizer=AlwaysAllow())
    await kubelet.start()
    pf = None
    try:
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"},
                "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                           "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.port}}}}
        await kubectl(api_server, "apply", "-f", "-", stdin=json.dumps(node))
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pf"},
               "spec": {"nodeName": "n2", "containers": [{"name": "c", "image": "busybox"}]}}
        await kubectl(api_server, "apply", "-f", "-", stdin=json.dumps(pod))
        await kubectl(api_server, "patch", "pod", "pf", "--subresource=status", "--type=merge",
                      "-p", '{"status":{"phase":"Running"}}')
        local = free_port()
        pf = await asyncio.create_subprocess_exec(
            kubectl_bin, "--kubeconfig", str(api_server.kubeconfig), "port-forward",
            "pod/pf", f"{local}:{target_port}", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        assert pf.stdout is not None
        line = await asyncio.wait_for(pf.stdout.readline(), 20)
        if b"Forwarding from" not in line:
            assert pf.stderr is not None
            raise AssertionError((await pf.stderr.read()).decode() + api_server.log()[-3000:])
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        writer.write(b"ping")
        await writer.drain()
        got = await asyncio.wait_for(reader.read(100), 20)
        writer.close()
        assert got == b"echo:ping"
    finally:
        if pf is not None and pf.returncode is None:
            pf.terminate()
            await pf.wait()
        await kubelet.stop()
        await streaming.stop()
        target.close()
        await target.wait_closed()
