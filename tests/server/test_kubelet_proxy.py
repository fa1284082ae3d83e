"""pods/log and nodes/proxy through the API server to the real kubelet API server
(`kubenode.kubelet.server.KubeletServer`, run here in-process with a log file in CRI
format), with real kubectl."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

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
