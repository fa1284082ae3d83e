"""/logs/ (node logs) of the real kubelet API server (`KubeletServer`, in-process, its root a
temp dir) reached through the API server's nodes/proxy with real kubectl (1.27 and 1.32)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from kubenode.kubelet.server.auth import AlwaysAllow
from kubenode.kubelet.server.server import KubeletServer, KubeletServerConfig
from tests.fixtures.apiserver import APIServerProcess


async def kubectl(binary: str, server: APIServerProcess, *args: str,
                  stdin: str | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        binary, "--kubeconfig", str(server.kubeconfig), *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("kubectl_bin", ["/usr/lib/google-cloud-sdk/bin/kubectl.1.27",
                                         "kubectl"])
async def test_node_logs_through_apiserver(api_server: APIServerProcess, tmp_path: Path,
                                           kubectl_bin: str) -> None:
    root = tmp_path / "varlog"
    (root / "pods" / "default_web_1").mkdir(parents=True)
    (root / "syslog").write_text("node booted\nkubelet started\n")
    (root / "pods" / "default_web_1" / "0.log").write_text(
        "2026-01-01T00:00:00.000000000Z stdout F hi\n")
    (tmp_path / "secret.txt").write_text("not yours\n")
    node_name = f"logs-{tmp_path.name[-6:].lower().replace('_', '-')}"
    kubelet = KubeletServer(
        config=KubeletServerConfig(node_name=node_name, address="127.0.0.1", port=0,
                                   healthz_port=-1, cert_dir=str(tmp_path / "pki"),
                                   client_ca_file=str(api_server.ca_cert),
                                   node_logs_dir=str(root)),
        now=time.time, authorizer=AlwaysAllow())
    await kubelet.start()
    try:
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node_name},
                "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                           "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.port}}}}
        rc, _, err = await kubectl(kubectl_bin, api_server, "apply", "-f", "-",
                                   stdin=json.dumps(node))
        assert rc == 0, err
        base = f"/api/v1/nodes/{node_name}/proxy/logs"
        rc, out, err = await kubectl(kubectl_bin, api_server, "get", "--raw", base + "/")
        assert rc == 0, err
        assert out == '<pre>\n<a href="pods/">pods/</a>\n<a href="syslog">syslog</a>\n</pre>\n'
        rc, out, err = await kubectl(kubectl_bin, api_server, "get", "--raw",
                                     base + "/syslog")
        assert (rc, out) == (0, "node booted\nkubelet started\n"), err
        rc, out, err = await kubectl(kubectl_bin, api_server, "get", "--raw",
                                     base + "/pods/default_web_1/")
        assert rc == 0 and '<a href="0.log">0.log</a>' in out, err
        rc, out, err = await kubectl(kubectl_bin, api_server, "get", "--raw",
                                     base + "/pods/default_web_1")   # redirected to .../
        assert rc == 0 and '<a href="0.log">0.log</a>' in out, err
        rc, out, err = await kubectl(kubectl_bin, api_server, "get", "--raw",
                                     base + "/pods/default_web_1/0.log")
        assert (rc, out) == (0, "2026-01-01T00:00:00.000000000Z stdout F hi\n"), err
        rc, out, err = await kubectl(kubectl_bin, api_server, "get", "--raw",
                                     base + "/missing.log")
        assert rc != 0 and "(NotFound)" in err, err
        rc, out, err = await kubectl(kubectl_bin, api_server, "get", "--raw",
                                     base + "/%2E%2E/secret.txt")
        assert rc != 0 and "not yours" not in out + err, err
        # nodes/proxy needs rights on nodes/proxy at the API server
        rc, out, err = await kubectl(kubectl_bin, api_server, "--as", "nobody", "get",
                                     "--raw", base + "/syslog")
        assert rc != 0 and "forbidden" in err.lower() and "node booted" not in out
    finally:
        await kubelet.stop()
