"""--kubelet-certificate-authority: the API server verifies the kubelet's serving
certificate against it (by default it does not, as upstream). A real KubeletServer runs
in-process with a log file in CRI format; `kubectl logs` goes through the API server."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from kubenode.kubelet.server.auth import AlwaysAllow
from kubenode.kubelet.server.providers import ContainerLog
from kubenode.kubelet.server.server import KubeletServer, KubeletServerConfig
from tests.fixtures.apiserver import APIServerProcess, start_api_server


class FileLogs:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def container_log(self, *, namespace: str, pod: str, container: str,
                            previous: bool) -> ContainerLog:
        return ContainerLog(path=str(self.path))


async def _kubectl(server: APIServerProcess, *args: str,
                   stdin: str | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "kubectl", "--kubeconfig", str(server.kubeconfig), *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin else None), 30)
    return proc.returncode or 0, out.decode(), err.decode()


async def _logs_through(server: APIServerProcess, kubelet_port: int) -> tuple[int, str, str]:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}}}}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lp"},
           "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}}
    for obj in (node, pod):
        rc, _, err = await _kubectl(server, "create", "-f", "-", stdin=json.dumps(obj))
        assert rc == 0, err
    return await _kubectl(server, "logs", "lp")


@pytest.mark.slow
async def test_kubelet_serving_certificate_verified_when_a_ca_is_given(tmp_path: Path
                                                                       ) -> None:
    log_file = tmp_path / "0.log"
    log_file.write_text("2026-01-01T00:00:00.000000000Z stdout F verified\n")
    kubelet_pki = tmp_path / "kubelet-pki"
    kubelet = KubeletServer(
        config=KubeletServerConfig(node_name="n1", address="127.0.0.1", port=0,
                                   healthz_port=-1, cert_dir=str(kubelet_pki),
                                   anonymous_auth=True),
        now=time.time, logs=FileLogs(log_file), authorizer=AlwaysAllow())
    await kubelet.start()
    try:
        # the kubelet's self-signed certificate is its own CA: verified, it works
        with start_api_server(tmp_path / "good", extra_args=[
                "--kubelet-certificate-authority", str(kubelet_pki / "kubelet.crt")]) as good:
            rc, out, err = await asyncio.to_thread(
                lambda: asyncio.run(_logs_through(good, kubelet.port)))
            assert (rc, out) == (0, "verified\n"), err
        # another CA (the cluster's own): the kubelet is not trusted
        other = tmp_path / "other-ca.crt"
        with start_api_server(tmp_path / "bad") as bad_probe:
            other.write_bytes(bad_probe.ca_cert.read_bytes())
        with start_api_server(tmp_path / "bad2", extra_args=[
                "--kubelet-certificate-authority", str(other)]) as bad:
            rc, out, err = await asyncio.to_thread(
                lambda: asyncio.run(_logs_through(bad, kubelet.port)))
            assert rc != 0 and "certificate verify failed" in err, err
    finally:
        await kubelet.stop()
