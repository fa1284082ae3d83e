"""IPv6 and dual-stack Services, for both backends: the IPv6 proxier (an `ip6` table /
ip6tables chains) takes a Service's IPv6 cluster IP and the IPv6 EndpointSlices, the
IPv4 one the rest. Traffic from the host (netenv.py: the host does not forward IPv6)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from kubenode.proxy.nftables import run_nft

from .conftest import Harness, ep, eps, svc
from .netenv import HTTP6_PORT, NetEnv, ipv6_of

pytestmark = [pytest.mark.root, pytest.mark.slow]

A, B, C = "10.42.200.11", "10.42.200.12", "10.42.200.13"
VIP6, VIP4 = "fd43:200::10", "10.43.200.70"


def slice6(service: str, ips: list[str]) -> dict[str, Any]:
    s = eps(service, [ep(ipv6_of(ip)) for ip in ips],
            {"name": "http", "port": HTTP6_PORT, "protocol": "TCP"}, name=f"{service}-v6")
    s["addressType"] = "IPv6"
    return s


async def fetch(url: str, n: int) -> list[str]:
    """n GETs from the host: the first word of each answer, or what went wrong."""
    out = []
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            try:
                async with s.get(url, timeout=aiohttp.ClientTimeout(3)) as r:
                    out.append((await r.text()).split()[0])
            except aiohttp.ClientConnectorError as err:
                refused = isinstance(err.os_error, ConnectionRefusedError)
                out.append("refused" if refused else f"error:{err}")
            except TimeoutError:
                out.append("timeout")
    return out


@pytest.fixture
async def proxy6(proxy: Harness) -> AsyncIterator[Harness]:
    """An IPv6 proxier beside the `proxy` fixture's IPv4 one (same backend kind)."""
    h = Harness(proxy.kind, family="IPv6")
    try:
        yield h
    finally:
        await h.close()


async def test_ipv6_cluster_ip(proxy6: Harness, netenv: NetEnv) -> None:
    for ip in (A, B):  # the pods' IPv6 listeners answer directly
        url = f"http://[{ipv6_of(ip)}]:{HTTP6_PORT}/cgi-bin/who"
        for _ in range(50):
            if (await fetch(url, 1))[0] in ("a", "b"):
                break
            await asyncio.sleep(0.1)
    proxy6.service(svc("web6", VIP6))
    proxy6.slice(slice6("web6", [A, B]))
    await proxy6.sync()
    counts = collections.Counter(await fetch(f"http://[{VIP6}]/cgi-bin/who", 30))
    assert set(counts) == {"a", "b"}, counts
    # no endpoints: refused at once (TCP reset / ICMPv6 port unreachable)
    proxy6.delete_slice("web6-v6")
    await proxy6.sync()
    assert await fetch(f"http://[{VIP6}]/", 2) == ["refused"] * 2
    if proxy6.kind == "nftables":
        listing = await run_nft(["list", "table", "ip6", f"kpt{proxy6.tag}"])
        assert "type ipv6_addr . inet_proto . inet_service : verdict" in listing
        # an unallocated address of the IPv6 service range is dropped, not routed out
        assert await fetch("http://[fd43:200::99]/", 1) == ["timeout"]


async def test_dual_stack_service(proxy: Harness, proxy6: Harness, netenv: NetEnv) -> None:
    """One Service with an IPv4 and an IPv6 cluster IP, an EndpointSlice per family:
    each proxier programs its family's VIP with its family's endpoints only."""
    dual = svc("dual", VIP4, ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="RequireDualStack")
    dual["spec"]["clusterIPs"] = [VIP4, VIP6]
    for h in (proxy, proxy6):
        h.service(dual)
        h.slice(eps("dual", [ep(A)], name="dual-v4"))
        h.slice(slice6("dual", [C]))
        await h.sync()
    assert proxy.proxier.service_map and proxy6.proxier.service_map
    (info4,) = proxy.proxier.service_map.values()
    (info6,) = proxy6.proxier.service_map.values()
    assert (info4.cluster_ip, info6.cluster_ip) == (VIP4, VIP6)
    assert {r.split()[0] for r in netenv.pods["client"].http(
        f"http://{VIP4}/cgi-bin/who", 5)} == {"a"}
    assert set(await fetch(f"http://[{VIP6}]/cgi-bin/who", 5)) == {"c"}


async def test_health_check_node_port_per_family(proxy: Harness, proxy6: Harness,
                                                 netenv: NetEnv) -> None:
    """A dual-stack externalTrafficPolicy=Local Service: each family's proxier answers
    the healthCheckNodePort on its own address with its own family's local endpoints."""
    hc_port = 32000 + (int(proxy6.tag, 16) + 350) % 700
    dual = svc("etp", VIP4, type="LoadBalancer", externalTrafficPolicy="Local",
               healthCheckNodePort=hc_port, ipFamilies=["IPv4", "IPv6"])
    dual["spec"]["clusterIPs"] = [VIP4, VIP6]
    dual["spec"]["ports"][0]["nodePort"] = 30000 + (int(proxy6.tag, 16) + 11) % 2700
    for h in (proxy, proxy6):  # only an IPv4 slice so far
        h.service(dual)
        h.slice(eps("etp", [ep(A), ep(B)], name="etp-v4"))
        await h.sync()
    async with aiohttp.ClientSession() as s:
        for host, n in (("127.0.0.1", 2), ("[::1]", 0)):
            async with s.get(f"http://{host}:{hc_port}/healthz") as r:
                assert (r.status, (await r.json())["localEndpoints"]) == (
                    200 if n else 503, n), host
        proxy6.slice(slice6("etp", [C]))
        await proxy6.sync()
        async with s.get(f"http://[::1]:{hc_port}/healthz") as r:
            assert (r.status, (await r.json())["localEndpoints"]) == (200, 1)
