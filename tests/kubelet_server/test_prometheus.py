"""Debian's real Prometheus scrapes the kubelet server's /metrics, /metrics/cadvisor and
/metrics/resource over HTTPS with a client certificate; the targets must be up and the
expected series queryable. The pod's cgroup is a real one on this host."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kubenode.stats.cgroups import cgroup_mode
from kubenode.stats.summary import ContainerInfo, PodInfo
from kubenode.up import free_port
from tests.kubelet_server.conftest import Kubelet

pytestmark = [pytest.mark.root, pytest.mark.slow]

PROMETHEUS = "/usr/bin/prometheus"
CGROOT = Path("/sys/fs/cgroup")


@pytest.fixture
def pod_cgroup() -> Iterator[tuple[str, int]]:
    """A pod cgroup with one container cgroup running `sleep` (v1 or v2)."""
    name = f"kntest-{secrets.token_hex(4)}"
    rels = [name, f"{name}/app"]
    if cgroup_mode(CGROOT) == "unified":
        dirs = [[CGROOT / r] for r in rels]
    else:
        dirs = [[CGROOT / c / r for c in ("cpu", "cpuacct", "memory", "pids")] for r in rels]
    made: list[Path] = []
    proc = None
    try:
        for group in dirs:
            for d in group:
                d.mkdir()
                made.append(d)

        def join() -> None:
            for d in dirs[1]:
                (d / "cgroup.procs").write_text(str(os.getpid()))

        proc = subprocess.Popen(["/bin/busybox", "sleep", "300"], preexec_fn=join)
        yield name, proc.pid
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        for d in reversed(made):
            d.rmdir()


@pytest.fixture
def prometheus(tmp_path: Path, kubelet: Kubelet) -> Iterator[str]:
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.skip("prometheus is not installed")
    port = free_port()
    tls = (f"    tls_config:\n      ca_file: {kubelet.server_cert}\n"
           f"      cert_file: {kubelet.prometheus.cert}\n"
           f"      key_file: {kubelet.prometheus.key}\n")
    jobs = ""
    for job, path in (("kubelet", "/metrics"), ("cadvisor", "/metrics/cadvisor"),
                      ("resource", "/metrics/resource")):
        jobs += (f"  - job_name: {job}\n    scheme: https\n    metrics_path: {path}\n{tls}"
                 f"    static_configs:\n      - targets: ['127.0.0.1:{kubelet.server.port}']\n")
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                   f"scrape_configs:\n{jobs}")
    data = tmp_path / "prom-data"
    with open(tmp_path / "prometheus.log", "wb") as logf:
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={data}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=logf)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(data, ignore_errors=True)


async def _api(s: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with s.get(url, params=params) as r:
        body = await r.json()
        assert body["status"] == "success", body
        return body["data"]


async def test_prometheus_scrapes_kubelet(kubelet: Kubelet, prometheus: str,
                                          pod_cgroup: tuple[str, int]) -> None:
    cg, _pid = pod_cgroup
    kubelet.pods.stats_pods = [PodInfo(
        name="web", namespace="default", uid="uid-1", cgroup=f"/{cg}", netns_pid=os.getpid(),
        start_time=1763929000.0,
        containers=[ContainerInfo(name="app", id="c0ffee", image="busybox:latest",
                                  cgroup=f"/{cg}/app", start_time=1763929001.0)])]
    kubelet.metrics.running_pods.set(1)
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            try:
                async with s.get(prometheus + "/-/ready") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        targets: list[dict[str, Any]] = []
        for _ in range(150):
            targets = (await _api(s, prometheus + "/api/v1/targets"))["activeTargets"]
            if len(targets) == 3 and all(t["health"] == "up" for t in targets):
                break
            await asyncio.sleep(0.2)
        assert {t["labels"]["job"]: t["health"] for t in targets} == {
            "kubelet": "up", "cadvisor": "up", "resource": "up"}, targets

        async def query(q: str) -> list[dict[str, Any]]:
            for _ in range(50):
                result: list[dict[str, Any]] = (
                    await _api(s, prometheus + "/api/v1/query", query=q))["result"]
                if result:
                    return result
                await asyncio.sleep(0.2)
            raise AssertionError(f"no series for {q}")

        ws = await query('container_memory_working_set_bytes{job="cadvisor",pod="web",'
                         'container="app",namespace="default"}')
        assert ws[0]["metric"]["image"] == "busybox:latest"
        assert ws[0]["metric"]["id"] == f"/{cg}/app"
        assert float(ws[0]["value"][1]) > 0
        cpu = await query('container_cpu_usage_seconds_total{job="cadvisor",id="/"}')
        assert cpu[0]["metric"]["cpu"] == "total" and float(cpu[0]["value"][1]) > 0
        for q in ('container_network_receive_bytes_total{job="cadvisor",pod="web"}',
                  'container_start_time_seconds{job="cadvisor",container="app"}',
                  'container_memory_rss{job="cadvisor",container="app"}',
                  'machine_cpu_cores{job="cadvisor"}',
                  'node_cpu_usage_seconds_total{job="resource"}',
                  'node_memory_working_set_bytes{job="resource"}',
                  'pod_memory_working_set_bytes{job="resource",pod="web"}',
                  'container_cpu_usage_seconds_total{job="resource",container="app"}',
                  'scrape_error{job="resource"} == 0',
                  'kubelet_running_pods{job="kubelet"} == 1',
                  'kubelet_node_name{job="kubelet",node="node-test"}'):
            await query(q)
