"""kubectl top node / top pod (metrics.k8s.io/v1beta1 served by `kubenode server` from the
kubelet's /metrics/resource) with kubectl 1.27 and 1.33: a busybox container burning one
CPU shows ~1000m."""

from __future__ import annotations

import json
import re

import pytest

from tests.fixtures.cluster import Cluster, until

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


@pytest.mark.parametrize("version", VERSIONS)
def test_top_pod_shows_one_cpu(burning: Cluster, version: str) -> None:
    def spin() -> float | None:
        out = burning.kubectl("top", "pod", "burn", "--containers", "--no-headers",
                              version=version, check=False).stdout
        rows = {ln.split()[1]: ln.split() for ln in out.splitlines() if ln.strip()}
        if "spin" not in rows:
            return None
        cpu = millicores(rows["spin"][2])
        return cpu if 900 <= cpu <= 1100 else None
    cpu = until(spin, 60, "spin at ~1000m")
    assert 900 <= cpu <= 1100
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
    assert millicores(cpu.removesuffix("m") + "m") >= 800  # the spinning container at least
    assert cpu_pct.endswith("%") and mem.endswith("Mi") and mem_pct.endswith("%")
