"""kubectl port-forward (two ports, 20 concurrent connections to busybox httpd) and
kubectl cp both ways (10 MB, sha256) through `kubenode server` -> kubelet -> runtime,
with kubectl 1.27 (SPDY) and 1.33 (WebSocket, port-forward tunneled over SPDY)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fixtures.cluster import Cluster, kubectl_binary, until

pytestmark = [pytest.mark.root, pytest.mark.slow]

VERSIONS = ["1.27", "1.33"]

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  nodeName: %(node)s
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: busybox
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "mkdir -p /a /b && echo port-8080 > /a/index.html &&
      head -c 200000 /dev/urandom > /b/blob && sha256sum /b/blob > /b/blob.sum &&
      httpd -p 8081 -h /b && exec httpd -f -p 8080 -h /a"]
    ports: [{name: small, containerPort: 8080}, {name: blob, containerPort: 8081}]
    readinessProbe:
      exec: {command: [test, -f, /b/blob.sum]}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: small}
  - {name: blob, port: 81, targetPort: 8081}
"""


@pytest.fixture(scope="module")
def web(cluster: Cluster) -> Cluster:
    cluster.apply(PODS % {"node": cluster.node})
    cluster.wait_running("web")
    return cluster


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=20) as r:
        return bytes(r.read())


@pytest.mark.parametrize("version", VERSIONS)
def test_port_forward_two_ports_20_concurrent(web: Cluster, version: str) -> None:
    blob_sum = web.kubectl("exec", "web", "--", "cat", "/b/blob.sum").stdout.split()[0]
    proc = web.popen("port-forward", "--address", "127.0.0.1", "pod/web", ":8080", ":8081",
                     version=version, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        ports: dict[int, int] = {}
        deadline = time.monotonic() + 20
        while len(ports) < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline().decode()
            m = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)", line)
            if m:
                ports[int(m.group(2))] = int(m.group(1))
            elif not line:
                break
        assert set(ports) == {8080, 8081}, ports

        def fetch(i: int) -> tuple[bytes, bytes]:
            small = _get(f"http://127.0.0.1:{ports[8080]}/index.html")
            blob = _get(f"http://127.0.0.1:{ports[8081]}/blob")
            return small, blob

        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(fetch, range(20)))
        for small, blob in results:
            assert small == b"port-8080\n"
            assert hashlib.sha256(blob).hexdigest() == blob_sum
        assert proc.poll() is None  # still forwarding
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("version", VERSIONS)
def test_cp_both_ways_10mb(web: Cluster, version: str, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    data = os.urandom(10 * 1024 * 1024)
    src.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    target = f"/tmp/big-{version}"
    web.kubectl("cp", str(src), f"web:{target}", version=version, timeout=120)
    got = web.kubectl("exec", "web", "--", "sha256sum", target, version=version).stdout
    assert got.split()[0] == want
    back = tmp_path / "back.bin"
    web.kubectl("cp", f"web:{target}", str(back), version=version, timeout=120)
    assert hashlib.sha256(back.read_bytes()).hexdigest() == want


@pytest.mark.parametrize("version", VERSIONS)
def test_pod_and_service_proxy(web: Cluster, version: str) -> None:
    raw = "/api/v1/namespaces/default/{}/proxy/index.html"
    until(lambda: web.kubectl("get", "--raw", raw.format("services/web:http"),
                              check=False).returncode == 0, 30, "the service's endpoints")
    for target in ("pods/web:8080", "pods/web:small", "pods/http:web:8080",
                   "services/web:http", "services/web:80"):
        out = web.kubectl("get", "--raw", raw.format(target), version=version).stdout
        assert out == "port-8080\n", target
    blob_sum = web.kubectl("exec", "web", "--", "cat", "/b/blob.sum").stdout.split()[0]
    r = subprocess.run([kubectl_binary(version), "--kubeconfig", str(web.kubeconfig), "get",
                        "--raw", "/api/v1/namespaces/default/services/web:blob/proxy/blob"],
                       capture_output=True, check=True, timeout=60)
    assert hashlib.sha256(r.stdout).hexdigest() == blob_sum
    r2 = web.kubectl("get", "--raw", raw.format("services/web"), version=version, check=False)
    assert r2.returncode != 0  # two ports: one must be named
    r3 = web.kubectl("get", "--raw", raw.format("services/nope:80"), version=version,
                     check=False)
    assert r3.returncode != 0 and "not found" in r3.stderr
