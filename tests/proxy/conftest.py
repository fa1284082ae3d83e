"""Fixtures for kube-proxy tests: one test network per session (bridge, pods) and a
proxier per test with its own nft table / iptables chain prefix, always cleaned up."""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from kubenode.proxy.conntrack import Conntrack
from kubenode.proxy.healthcheck import ProxierHealth, ServiceHealthServer
from kubenode.proxy.metrics import ProxyMetrics
from kubenode.proxy.nftables import NftablesBackend
from kubenode.proxy.proxier import Backend, Proxier
from kubenode.proxy.types import IPFamily

from .netenv import CLUSTER_CIDR, CLUSTER_CIDR6, SERVICE_CIDR, SERVICE_CIDR6, NetEnv

NODE = "node-a"
BACKENDS = ["nftables", "iptables"]


@pytest.fixture(scope="session")
def netenv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetEnv]:
    if shutil.which("nft") is None or shutil.which("busybox") is None:
        pytest.skip("needs nft and busybox")
    env = NetEnv(tmp_path_factory.mktemp("proxy-net"))
    try:
        env.setup()
        env.add_pod("a", "10.42.200.11")
        env.add_pod("b", "10.42.200.12")
        env.add_pod("c", "10.42.200.13")
        env.add_pod("client", "10.42.200.50", serve=False)
        env.add_pod("outside", "10.42.201.50", serve=False)
        env.wait_ready()
        yield env
    finally:
        env.close()


def make_backend(kind: str, tag: str, family: IPFamily = "IPv4") -> Backend:
    v6 = family == "IPv6"
    cluster_cidr = CLUSTER_CIDR6 if v6 else CLUSTER_CIDR
    if kind == "nftables":
        return NftablesBackend(table=f"kpt{tag}", cluster_cidr=cluster_cidr,
                               service_cidrs=[SERVICE_CIDR6 if v6 else SERVICE_CIDR],
                               family=family)
    from kubenode.proxy.iptables import IptablesBackend
    return IptablesBackend(chain_prefix=f"KT{tag[:4].upper()}", cluster_cidr=cluster_cidr,
                           family=family)


class Harness:
    """Feeds Service/EndpointSlice dicts through the real tracker + sync path."""

    def __init__(self, kind: str, tag: str | None = None, family: IPFamily = "IPv4") -> None:
        self.kind = kind
        self.tag = tag or secrets.token_hex(3)
        self.backend = make_backend(kind, self.tag, family)
        self.service_health = ServiceHealthServer(
            bind_host="::1" if family == "IPv6" else "127.0.0.1")
        self.health = ProxierHealth(now=time.time)
        self.conntrack = Conntrack(family=family)
        self.proxier = Proxier(backend=self.backend, node_name=NODE, conntrack=self.conntrack,
                               metrics=ProxyMetrics.create(), health=self.health,
                               service_health=self.service_health, family=family)
        self.proxier.on_services_synced()
        self.proxier.on_endpointslices_synced()
        self.services: dict[str, dict[str, Any]] = {}
        self.slices: dict[str, dict[str, Any]] = {}

    def service(self, obj: dict[str, Any]) -> None:
        key = obj["metadata"]["name"]
        old = self.services.get(key)
        self.services[key] = obj
        self.proxier.on_service_update(old, obj)

    def delete_service(self, name: str) -> None:
        self.proxier.on_service_delete(self.services.pop(name))

    def slice(self, obj: dict[str, Any]) -> None:
        key = obj["metadata"]["name"]
        old = self.slices.get(key)
        self.slices[key] = obj
        if old is None:
            self.proxier.on_endpointslice_add(obj)
        else:
            self.proxier.on_endpointslice_update(old, obj)

    def delete_slice(self, name: str) -> None:
        self.proxier.on_endpointslice_delete(self.slices.pop(name))

    async def sync(self) -> None:
        await self.proxier.sync()
        assert self.health.healthy(), "sync failed (see log)"

    async def close(self) -> None:
        await self.service_health.close()
        await self.backend.cleanup()


@pytest.fixture(params=BACKENDS)
async def proxy(request: pytest.FixtureRequest, netenv: NetEnv) -> AsyncIterator[Harness]:
    if request.param == "iptables" and shutil.which("iptables-restore") is None:
        pytest.skip("needs iptables-restore")
    h = Harness(request.param)
    try:
        yield h
    finally:
        await h.close()


def svc(name: str, ip: str, *ports: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "type": "ClusterIP",
                     "ports": list(ports) or [{"name": "http", "port": 80,
                                               "protocol": "TCP", "targetPort": "http"}],
                     **spec}}


def eps(service: str, endpoints: list[dict[str, Any]], *ports: dict[str, Any],
        name: str | None = None) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name or f"{service}-x", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": list(ports) or [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints}


def ep(ip: str, *, node: str = NODE, ready: bool = True, serving: bool | None = None,
       terminating: bool = False) -> dict[str, Any]:
    return {"addresses": [ip], "nodeName": node,
            "conditions": {"ready": ready, "serving": ready if serving is None else serving,
                           "terminating": terminating}}

