"""kubectl top node / top pod (metrics.k8s.io/v1beta1 served by `kubenode server` from the
kubelet's /metrics/resource) with kubectl 1.27 and 1.33: a busybox container burning one
CPU shows the CPU it got (1000m on an idle machine), checked against /proc."""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.cluster import Cluster

pytestmark = [pytest.mark.root, pytest.mark.slow]

VERSIONS = ["1.27", "1.33"]

BURN = """
apiVersion: v1
kind: Pod
metadata: {name: burn, labels: {app: burn}}
spec:
  nodeName: %(node)s
  terminationGracePeriodSeconds: 1
  containers:
  - {name: spin, image: busybox, imagePullPolicy: IfNotPresent,
     command: [sh, -c, "while :; do :; done"]}
  - {name: idle, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
"""


def millicores(q: str) -> float:
    m = re.fullmatch(r"(\d+)([num]?)", q)
    assert m, q
    return int(m.group(1)) * {"": 1000, "m": 1, "u": 1e-3, "n": 1e-6}[m.group(2)]


@pytest.fixture(scope="module")
def burning(cluster: Cluster) -> Cluster:
    cluster.apply(BURN % {"node": cluster.node})
    cluster.wait_running("burn")
    return cluster


def test_metrics_api_discovery_and_objects(burning: Cluster) -> None:
    groups = json.loads(burning.kubectl("get", "--raw", "/apis").stdout)
    assert any(g["name"] == "metrics.k8s.io" for g in groups["groups"])
    assert "metrics.k8s.io/v1beta1" in burning.kubectl("api-versions").stdout
    nodes = json.loads(burning.kubectl("get", "--raw",
                                       "/apis/metrics.k8s.io/v1beta1/nodes").stdout)
    assert nodes["kind"] == "NodeMetricsList"
    [node] = nodes["items"]
    assert node["metadata"]["name"] == burning.node and node["window"].endswith("s")
    assert millicores(node["usage"]["cpu"]) > 0
    pm = json.loads(burning.kubectl(
        "get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burn").stdout)
    assert pm["kind"] == "PodMetrics"
    assert {c["name"] for c in pm["containers"]} == {"spin", "idle"}
    r = burning.kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/"
                        "pods/nope", check=False)
    assert r.returncode != 0 and 'podmetrics.metrics.k8s.io "nope" not found' in r.stderr
    sel = json.loads(burning.kubectl(
        "get", "--raw", "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=app%3Dother").stdout)
    assert sel["items"] == []


class Spinner:
    """Ground truth: the spinner's own CPU time from /proc/<pid>/stat (utime + stime)."""

    def __init__(self, cluster: Cluster) -> None:
        pod = cluster.get("pod", "burn")
        [cid] = [c["containerID"].split("://", 1)[1]
                 for c in pod["status"]["containerStatuses"] if c["name"] == "spin"]
        assert cluster.runtime is not None
        state = subprocess.run(["runc", "--root", str(cluster.runtime.state / "runc"),
                                "state", cid], capture_output=True, text=True, check=True)
        self.pid = int(json.loads(state.stdout)["pid"])
        self.tick = os.sysconf("SC_CLK_TCK")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick


def _pod_metrics(cluster: Cluster) -> dict[str, Any]:
    """GET the PodMetrics straight from the API server (no kubectl start-up delay)."""
    cfg = yaml.safe_load(cluster.kubeconfig.read_text())
    user = cfg["users"][0]["user"]
    d = cluster.kubeconfig.parent
    ctx = ssl.create_default_context(cafile=str(cluster.server.ca_cert))
    ctx.check_hostname = False
    cert, key = (Path(user["client-certificate"]), Path(user["client-key"])) \
        if "client-certificate" in user else _write_creds(d, user)
    ctx.load_cert_chain(str(d / cert), str(d / key))
    url = f"{cluster.server.url}/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burn"
    with urllib.request.urlopen(url, context=ctx, timeout=20) as r:
        return dict(json.loads(r.read()))


def _write_creds(d: Path, user: dict[str, str]) -> tuple[Path, Path]:
    (d / "top-client.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
    (d / "top-client.key").write_bytes(base64.b64decode(user["client-key-data"]))
    return d / "top-client.crt", d / "top-client.key"


def test_pod_metrics_match_the_cpu_the_spinner_got(burning: Cluster) -> None:
    """The reported usage is the CPU the container really got over the window (on an idle
    machine: one whole CPU, 1000m); checked against /proc over the same span."""
    spinner = Spinner(burning)
    _pod_metrics(burning)  # two samples exist from here on
    time.sleep(1.2)
    marks = []
    for i in range(2):
        t0, c0 = time.monotonic(), spinner.cpu_seconds()
        pm = _pod_metrics(burning)
        t1, c1 = time.monotonic(), spinner.cpu_seconds()
        marks.append(((t0 + t1) / 2, (c0 + c1) / 2, t1 - t0))
        if i == 0:
            time.sleep(4)
    (ta, ca, da), (tb, cb, db) = marks
    truth = (cb - ca) / (tb - ta) * 1000
    [spin] = [c for c in pm["containers"] if c["name"] == "spin"]
    reported = millicores(spin["usage"]["cpu"])
    window = float(pm["window"].removesuffix("s"))
    assert abs(window - (tb - ta)) <= 0.1 + da + db, (window, tb - ta)
    print(f"spinner: reported {reported:.0f}m, measured {truth:.0f}m over {window:.2f}s")
    assert abs(reported - truth) <= 0.1 * max(truth, 100), (reported, truth)


@pytest.mark.parametrize("version", VERSIONS)
def test_top_pod(burning: Cluster, version: str) -> None:
    out = burning.kubectl("top", "pod", "burn", "--containers", "--no-headers",
                          version=version).stdout
    rows = {ln.split()[1]: ln.split() for ln in out.splitlines() if ln.strip()}
    assert set(rows) == {"spin", "idle"}, out
    assert millicores(rows["spin"][2]) > 100 and millicores(rows["idle"][2]) < 50
    out = burning.kubectl("top", "pod", "--no-headers", version=version).stdout
    assert re.search(r"^burn\s+\d+m\s+\d+Mi\s*$", out, re.M), out


@pytest.mark.parametrize("version", VERSIONS)
def test_top_node(burning: Cluster, version: str) -> None:
    out = burning.kubectl("top", "node", version=version).stdout
    header, row = out.splitlines()[:2]
    # 1.33 says CPU(%) / MEMORY(%)
    assert [h.replace("(%)", "%") for h in header.split()] == [
        "NAME", "CPU(cores)", "CPU%", "MEMORY(bytes)", "MEMORY%"]
    name, cpu, cpu_pct, mem, mem_pct = row.split()
    assert name == burning.node
    assert millicores(cpu) > 100  # the spinning container at least
    assert cpu_pct.endswith("%") and mem.endswith("Mi") and mem_pct.endswith("%")
