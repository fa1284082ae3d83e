"""kube-proxy end to end, for both backends: Service/EndpointSlice dicts through the
real change trackers and sync into the kernel; traffic from netns pods routed by the
host (see netenv.py)."""

from __future__ import annotations

import collections

import aiohttp
import pytest

from .conftest import Harness, ep, eps, svc
from .netenv import HOST_VIP, NetEnv

pytestmark = [pytest.mark.root, pytest.mark.slow]

A, B, C = "10.42.200.11", "10.42.200.12", "10.42.200.13"


def who(results: list[str]) -> collections.Counter[str]:
    return collections.Counter(r.split()[0] for r in results)


async def test_cluster_ip_spreads_over_endpoints(proxy: Harness, netenv: NetEnv) -> None:
    vip = "10.43.200.10"
    proxy.service(svc("web", vip,
                      {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                      {"name": "alt", "port": 81, "protocol": "TCP", "targetPort": "alt"}))
    proxy.slice(eps("web", [ep(A), ep(B), ep(C)],
                    {"name": "http", "port": 8080, "protocol": "TCP"},
                    {"name": "alt", "port": 8081, "protocol": "TCP"}))
    await proxy.sync()
    client = netenv.pods["client"]
    counts = who(client.http(f"http://{vip}/cgi-bin/who", 200))
    assert set(counts) == {"a", "b", "c"}, counts
    assert all(n >= 35 for n in counts.values()), counts  # expected ~67 each
    # named target port "alt" resolves to 8081 through the EndpointSlice
    assert {r.split()[0] for r in client.http(f"http://{vip}:81/cgi-bin/who", 10)} <= {
        "alt-a", "alt-b", "alt-c"}
    # pod sources are not masqueraded for cluster IPs
    assert client.http(f"http://{vip}/cgi-bin/who")[0].split()[1] == "10.42.200.50"
    # from a pod that is itself an endpoint
    assert netenv.pods["a"].http(f"http://{vip}/cgi-bin/who")[0].split()[0] in {"a", "b", "c"}
    if proxy.kind == "nftables":
        # a port the service does not have: rejected; an unallocated VIP: dropped
        assert client.http(f"http://{vip}:82/") == ["refused"]
        assert client.http("http://10.43.200.99/") == ["timeout"]


async def test_host_to_cluster_ip(proxy: Harness, netenv: NetEnv) -> None:
    vip = HOST_VIP
    proxy.service(svc("hostweb", vip))
    proxy.slice(eps("hostweb", [ep(B)]))
    await proxy.sync()
    async with aiohttp.ClientSession() as s, s.get(f"http://{vip}/cgi-bin/who",
                                                   timeout=aiohttp.ClientTimeout(5)) as r:
        assert (await r.text()).split()[0] == "b"


async def test_no_endpoints_rejects_at_once(proxy: Harness, netenv: NetEnv) -> None:
    vip = "10.43.200.12"
    proxy.service(svc("empty", vip))
    await proxy.sync()
    client = netenv.pods["client"]
    # "refused" (ICMP port unreachable), not "timeout" (the client waits 1.5s at most)
    assert client.http(f"http://{vip}/", 3) == ["refused"] * 3
    proxy.slice(eps("empty", [ep(C)]))
    await proxy.sync()
    assert who(client.http(f"http://{vip}/cgi-bin/who", 3)) == {"c": 3}
    proxy.delete_slice("empty-x")
    await proxy.sync()
    assert client.http(f"http://{vip}/", 1) == ["refused"]


async def test_endpoint_removed_and_udp_conntrack_flushed(proxy: Harness,
                                                          netenv: NetEnv) -> None:
    vip = "10.43.200.13"
    udp = {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}
    proxy.service(svc("dns", vip, udp, {"name": "http", "port": 80, "protocol": "TCP"}))
    udp_port = {"name": "dns", "port": 5353, "protocol": "UDP"}
    http_port = {"name": "http", "port": 8080, "protocol": "TCP"}
    proxy.slice(eps("dns", [ep(A)], udp_port, http_port))
    await proxy.sync()
    client = netenv.pods["client"]
    sport = 40000 + (hash(proxy.tag) % 1000)
    assert who(client.udp(vip, 53, 3, sport)) == {"a": 3}
    # the same UDP flow (same source port) must move to b once a is gone: only a
    # conntrack flush makes that happen (the entry would otherwise keep DNATing to a)
    deleted_before = proxy.conntrack.deleted
    proxy.slice(eps("dns", [ep(B)], udp_port, http_port))
    await proxy.sync()
    assert proxy.conntrack.deleted > deleted_before
    assert who(client.udp(vip, 53, 3, sport)) == {"b": 3}
    counts = who(client.http(f"http://{vip}/cgi-bin/who", 30))
    assert counts == {"b": 30}


async def test_node_port_masquerades_off_cluster(proxy: Harness, netenv: NetEnv) -> None:
    vip = "10.43.200.14"
    node_port = 30000 + int(proxy.tag, 16) % 2700
    proxy.service(svc("np", vip, {"name": "http", "port": 80, "protocol": "TCP",
                                  "nodePort": node_port}, type="NodePort"))
    proxy.slice(eps("np", [ep(A), ep(B)]))
    await proxy.sync()
    outside = netenv.pods["outside"]
    results = outside.http(f"http://10.42.201.1:{node_port}/cgi-bin/who", 20)
    assert set(who(results)) <= {"a", "b"} and len(results) == 20, results
    # the off-cluster client is masqueraded (the pod sees a host address)
    assert {r.split()[1] for r in results} <= {"10.42.200.1", "10.42.201.1"}, results
    # node port on the node's other address, from a pod
    results = netenv.pods["client"].http(f"http://10.42.200.1:{node_port}/cgi-bin/who", 4)
    assert set(who(results)) <= {"a", "b"}, results


async def test_session_affinity_client_ip(proxy: Harness, netenv: NetEnv) -> None:
    vip = "10.43.200.15"
    proxy.service(svc("sticky", vip, sessionAffinity="ClientIP",
                      sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}))
    proxy.slice(eps("sticky", [ep(A), ep(B), ep(C)]))
    await proxy.sync()
    counts = who(netenv.pods["client"].http(f"http://{vip}/cgi-bin/who", 30))
    assert len(counts) == 1 and sum(counts.values()) == 30, counts
    # a full resync (e.g. the periodic one) keeps the affinity
    proxy.proxier.need_full_sync = True
    await proxy.sync()
    again = who(netenv.pods["client"].http(f"http://{vip}/cgi-bin/who", 10))
    assert set(again) == set(counts), (counts, again)


async def test_traffic_policy_local(proxy: Harness, netenv: NetEnv) -> None:
    vip, vip2 = "10.43.200.16", "10.43.200.17"
    node_port = 30000 + (int(proxy.tag, 16) + 7) % 2700
    hc_port = 32000 + int(proxy.tag, 16) % 700
    proxy.service(svc("itp", vip, internalTrafficPolicy="Local"))
    proxy.slice(eps("itp", [ep(A), ep(B, node="node-b")]))
    proxy.service(svc("etp", vip2, {"name": "http", "port": 80, "protocol": "TCP",
                                    "nodePort": node_port},
                      type="LoadBalancer", externalTrafficPolicy="Local",
                      healthCheckNodePort=hc_port))
    proxy.slice(eps("etp", [ep(A, node="node-b"), ep(C)]))
    await proxy.sync()
    client, outside = netenv.pods["client"], netenv.pods["outside"]
    assert who(client.http(f"http://{vip}/cgi-bin/who", 20)) == {"a": 20}
    results = outside.http(f"http://10.42.201.1:{node_port}/cgi-bin/who", 20)
    assert who(results) == {"c": 20}, results
    # externalTrafficPolicy Local keeps the client's source address
    assert {r.split()[1] for r in results} == {"10.42.201.50"}
    # cluster IP of an eTP=Local service still uses all endpoints
    assert set(who(client.http(f"http://{vip2}/cgi-bin/who", 40))) == {"a", "c"}
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{hc_port}/healthz") as r:
            assert r.status == 200
            body = await r.json()
        assert body == {"service": {"namespace": "default", "name": "etp"},
                        "localEndpoints": 1, "serviceProxyHealthy": True}
        proxy.slice(eps("etp", [ep(A, node="node-b")]))
        proxy.slice(eps("itp", [ep(B, node="node-b")]))
        await proxy.sync()
        async with s.get(f"http://127.0.0.1:{hc_port}/healthz") as r:
            assert r.status == 503
            assert (await r.json())["localEndpoints"] == 0
    # no local endpoints: dropped (not rejected) for both policies
    assert outside.http(f"http://10.42.201.1:{node_port}/") == ["timeout"]
    assert client.http(f"http://{vip}/") == ["timeout"]


async def test_hairpin(proxy: Harness, netenv: NetEnv) -> None:
    vip = "10.43.200.18"
    proxy.service(svc("self", vip))
    proxy.slice(eps("self", [ep(A)]))
    await proxy.sync()
    result = netenv.pods["a"].http(f"http://{vip}/cgi-bin/who", 3)
    assert who(result) == {"a": 3}, result
    # masqueraded to the gateway, or the reply would bypass the host
    assert result[0].split()[1] == "10.42.200.1"


async def test_terminating_endpoints_only_without_ready_ones(proxy: Harness,
                                                             netenv: NetEnv) -> None:
    vip = "10.43.200.19"
    proxy.service(svc("term", vip))
    proxy.slice(eps("term", [ep(A), ep(B, ready=False, serving=True, terminating=True)]))
    await proxy.sync()
    client = netenv.pods["client"]
    assert who(client.http(f"http://{vip}/cgi-bin/who", 20)) == {"a": 20}
    proxy.slice(eps("term", [ep(A, ready=False, serving=True, terminating=True),
                             ep(B, ready=False, serving=True, terminating=True)]))
    await proxy.sync()
    assert set(who(client.http(f"http://{vip}/cgi-bin/who", 30))) == {"a", "b"}
    proxy.slice(eps("term", [ep(B, ready=False, serving=False, terminating=True)]))
    await proxy.sync()
    assert client.http(f"http://{vip}/") == ["refused"]


async def test_external_and_load_balancer_ips(proxy: Harness, netenv: NetEnv) -> None:
    vip, ext, lb = "10.43.200.20", "10.43.201.20", "10.43.201.21"
    s = svc("pub", vip, {"name": "http", "port": 80, "protocol": "TCP",
                         "nodePort": 30000 + (int(proxy.tag, 16) + 13) % 2700},
            type="LoadBalancer", externalIPs=[ext])
    s["status"] = {"loadBalancer": {"ingress": [{"ip": lb}]}}
    proxy.service(s)
    proxy.slice(eps("pub", [ep(B), ep(C)]))
    await proxy.sync()
    for ip in (ext, lb):
        results = netenv.pods["outside"].http(f"http://{ip}/cgi-bin/who", 10)
        assert set(who(results)) <= {"b", "c"} and len(results) == 10, (ip, results)
        # external traffic with policy Cluster is masqueraded
        assert {r.split()[1] for r in results} <= {"10.42.200.1", "10.42.201.1"}, results
    proxy.slice(eps("pub", []))
    await proxy.sync()
    assert netenv.pods["outside"].http(f"http://{ext}/") == ["refused"]
