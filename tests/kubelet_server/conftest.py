"""Fixtures: a kubelet API server on random ports with a throwaway PKI, a pod logs dir,
the host's real cgroups and /proc for stats, and a stand-in for the API server's
TokenReview/SubjectAccessReview endpoints (until the embedded apiserver fixture exists)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kubenode.kubelet.server.auth import ApiConnection, ApiReviewClient
from kubenode.kubelet.server.logs_dir import PodLogsDirLocator
from kubenode.kubelet.server.server import KubeletServer, KubeletServerConfig
from kubenode.stats.cgroups import detect_cgroup_reader
from kubenode.stats.metrics import KubeletMetrics
from kubenode.stats.summary import CgroupStatsProvider, NodeStatsConfig, PodInfo
from tests.kubelet_server.pki import ClientCert, TestCA

NODE = "node-test"


@dataclass
class Pods:
    """PodProvider + PodStatsSource with what the test puts in."""

    api_pods: list[dict[str, Any]] = field(default_factory=list)
    stats_pods: list[PodInfo] = field(default_factory=list)

    async def get_pods(self) -> list[dict[str, Any]]:
        return self.api_pods

    async def get_running_pods(self) -> list[dict[str, Any]]:
        return [{"metadata": p["metadata"], "spec": {"containers": [
            {"name": c["name"], "image": c["image"]} for c in p["spec"]["containers"]]}}
            for p in self.api_pods]

    async def pods_for_stats(self) -> list[PodInfo]:
        return self.stats_pods


@dataclass
class FakeApi:
    url: str
    reviews: list[dict[str, Any]]


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeApi]:
    """TokenReview: "alice-token" -> alice (group devs). SubjectAccessReview: system:masters
    everything; alice nodes/proxy and nodes/log; prometheus nodes/metrics; others nothing."""
    reviews: list[dict[str, Any]] = []

    async def token_review(request: web.Request) -> web.Response:
        body = await request.json()
        reviews.append(body)
        ok = body["spec"]["token"] == "alice-token"
        status: dict[str, Any] = {"authenticated": ok}
        if ok:
            status["user"] = {"username": "alice", "uid": "u-1", "groups": ["devs"]}
        return web.json_response({**body, "status": status})

    async def sar(request: web.Request) -> web.Response:
        body = await request.json()
        reviews.append(body)
        spec = body["spec"]
        ra = spec["resourceAttributes"]
        allowed = ("system:masters" in spec.get("groups", []) or (
            spec["user"] == "alice" and ra["subresource"] in ("proxy", "log")) or (
            spec["user"] == "prometheus" and ra["subresource"] == "metrics"))
        return web.json_response({**body, "status": {"allowed": allowed}})

    app = web.Application()
    app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", token_review)
    app.router.add_post("/apis/authorization.k8s.io/v1/subjectaccessreviews", sar)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield FakeApi(url=f"http://127.0.0.1:{port}", reviews=reviews)
    finally:
        await runner.cleanup()


@dataclass
class Kubelet:
    server: KubeletServer
    url: str
    healthz_url: str
    ca: TestCA
    server_cert: Path
    admin: ClientCert
    nobody: ClientCert
    prometheus: ClientCert
    pods: Pods
    logs_dir: Path
    metrics: KubeletMetrics


@pytest.fixture
async def kubelet(tmp_path: Path, fake_api: FakeApi) -> AsyncIterator[Kubelet]:
    ca = TestCA(tmp_path / "pki")
    pods = Pods()
    logs_dir = tmp_path / "pods-logs"
    logs_dir.mkdir()
    (tmp_path / "varlog" / "apt").mkdir(parents=True)
    (tmp_path / "varlog" / "syslog").write_text("node booted\n")
    (tmp_path / "varlog" / "apt" / "history.log").write_text("Install: runc\n")
    (tmp_path / "secret.txt").write_text("outside /var/log\n")
    reviews = ApiReviewClient(ApiConnection(server=fake_api.url, ssl=False), now=time.monotonic)
    metrics = KubeletMetrics(node_name=NODE)
    stats = CgroupStatsProvider(
        config=NodeStatsConfig(node_name=NODE, root_dir=str(tmp_path), cpu_min_interval=0.2),
        source=pods, cgroups=detect_cgroup_reader(), now=time.time)
    server = KubeletServer(
        config=KubeletServerConfig(node_name=NODE, address="127.0.0.1", port=0, healthz_port=0,
                                   cert_dir=str(tmp_path / "kubelet-pki"),
                                   client_ca_file=str(ca.cert_file),
                                   node_logs_dir=str(tmp_path / "varlog"),
                                   kubelet_config={"authentication": {"anonymous": {
                                       "enabled": False}}}),
        now=time.time, pods=pods, stats=stats, logs=PodLogsDirLocator(logs_dir),
        authorizer=reviews, token_reviewer=reviews, kubelet_metrics=metrics)
    await server.start()
    try:
        yield Kubelet(server=server, url=f"https://127.0.0.1:{server.port}",
                      healthz_url=f"http://127.0.0.1:{server.healthz_port}", ca=ca,
                      server_cert=tmp_path / "kubelet-pki" / "kubelet.crt",
                      admin=ca.client("kube-apiserver-kubelet-client", "system:masters"),
                      nobody=ca.client("nobody"), prometheus=ca.client("prometheus"),
                      pods=pods, logs_dir=logs_dir, metrics=metrics)
    finally:
        await server.stop()
        await reviews.close()
