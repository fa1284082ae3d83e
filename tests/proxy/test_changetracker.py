"""Change trackers, Service/EndpointSlice parsing, endpoint selection, config and the
debounced runner: no kernel involved."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest

from kubenode.proxy.changetracker import EndpointsChangeTracker, ServiceChangeTracker
from kubenode.proxy.config import ConfigError, ProxyConfig, parse_duration
from kubenode.proxy.proxier import SyncRunner
from kubenode.proxy.topology import ServiceViews
from kubenode.proxy.types import ServicePortName, service_ports, slice_endpoints

from .conftest import NODE, ep, eps, svc


def test_service_parsing_defaults() -> None:
    s = svc("web", "10.43.0.5", {"port": 53, "protocol": "UDP"}, {"name": "x", "port": 80},
            type="LoadBalancer", sessionAffinity="ClientIP", externalTrafficPolicy="Local",
            externalIPs=["1.2.3.4", "fe80::1"])
    s["spec"]["ports"][1]["nodePort"] = 30001
    s["status"] = {"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}, {"hostname": "lb"}]}}
    ports = service_ports(s)
    udp = ports[ServicePortName("default", "web", "", "UDP")]
    tcp = ports[ServicePortName("default", "web", "x", "TCP")]
    assert udp.session_affinity_timeout == 10800
    assert udp.external_ips == ("1.2.3.4",) and udp.load_balancer_ips == ("5.6.7.8",)
    assert tcp.node_port == 30001 and tcp.external_policy_local
    assert service_ports(svc("h", "None")) == {}
    assert service_ports({"metadata": {"name": "e"}, "spec": {"type": "ExternalName"}}) == {}


def test_each_family_sees_its_addresses() -> None:
    """A dual-stack Service gives each family's proxier its own cluster IP and external
    IPs; an EndpointSlice counts for its addressType's family only; a single-stack
    Service has no ports for the other family."""
    s = svc("web", "10.43.0.5", externalIPs=["1.2.3.4", "fd00:0::7"])
    s["spec"]["clusterIPs"] = ["10.43.0.5", "fd43:0:0::5"]
    (v4,) = service_ports(s, "IPv4").values()
    (v6,) = service_ports(s, "IPv6").values()
    assert (v4.cluster_ip, v4.external_ips) == ("10.43.0.5", ("1.2.3.4",))
    assert (v6.cluster_ip, v6.external_ips) == ("fd43::5", ("fd00::7",))
    assert service_ports(svc("four", "10.43.0.6"), "IPv6") == {}
    six = eps("web", [ep("fd42::11")])
    six["addressType"] = "IPv6"
    assert slice_endpoints(six, "IPv4") == {}
    assert [e.ip for e in slice_endpoints(six, "IPv6")[("http", "TCP")]] == ["fd42::11"]
    assert slice_endpoints(eps("web", [ep("10.42.0.1")]), "IPv6") == {}


def test_health_is_kept_per_family() -> None:
    """One family's failed sync keeps /healthz unhealthy until that family syncs again,
    whatever the other does (upstream ProxierHealthServer keys its state by family)."""
    from kubenode.proxy.healthcheck import ProxierHealth

    clock = [100.0]
    h = ProxierHealth(now=lambda: clock[0], health_timeout=60)
    h.updated("IPv4")
    h.updated("IPv6")
    h.failed("IPv6")
    h.updated("IPv4")
    assert not h.healthy()
    h.updated("IPv6")
    assert h.healthy()
    h.queued("IPv6")
    h.updated("IPv4")
    clock[0] += 61
    assert not h.healthy()  # IPv6's change waited too long, IPv4's syncs do not count


def test_service_tracker_drops_noop_changes() -> None:
    t = ServiceChangeTracker()
    a = svc("a", "10.43.0.1")
    assert t.update(None, a)
    assert not t.update(a, None)  # added then deleted before a sync: nothing pending
    m: dict = {}  # type: ignore[type-arg]
    assert t.update(None, a)
    t.apply(m)
    b = copy.deepcopy(a)
    b["metadata"]["resourceVersion"] = "2"
    b["metadata"]["annotations"] = {"x": "y"}  # irrelevant to the proxy
    assert not t.update(a, b)
    c = svc("a", "10.43.0.1", {"name": "dns", "port": 53, "protocol": "UDP"})
    assert t.update(b, c)
    assert not t.update(c, a)  # back to what was applied: dropped
    assert t.update(a, c)
    result = t.apply(m)
    assert result.updated == {"default/a"}
    d = svc("a", "10.43.0.2", {"name": "dns", "port": 53, "protocol": "UDP"})
    t.update(c, d)
    assert t.apply(m).deleted_udp_cluster_ips == {"10.43.0.1"}


def test_endpoints_tracker_merges_slices_and_reports_stale_udp() -> None:
    t = EndpointsChangeTracker()
    port = {"name": "dns", "port": 5353, "protocol": "UDP"}
    s1 = eps("d", [ep("10.42.0.1")], port, name="d-1")
    s2 = eps("d", [ep("10.42.0.2"), ep("10.42.0.1", ready=False)], port, name="d-2")
    assert t.update(s1)
    assert t.update(s2)
    m: dict = {}  # type: ignore[type-arg]
    r = t.apply(m)
    spn = ServicePortName("default", "d", "dns", "UDP")
    assert [e.ip for e in m[spn]] == ["10.42.0.1", "10.42.0.2"]
    assert m[spn][0].ready  # the ready copy wins over the not-ready duplicate
    assert r.stale_service_names == {spn}
    assert not t.update(copy.deepcopy(s1))  # same content: no-op
    t.update(s2, removed=True)
    r = t.apply(m)
    assert [e.ip for _, e in r.stale_endpoints] == ["10.42.0.2"]


def test_endpoint_selection() -> None:
    st, et = ServiceChangeTracker(), EndpointsChangeTracker()
    st.update(None, svc("s", "10.43.0.9", internalTrafficPolicy="Local"))
    et.update(eps("s", [ep("10.42.0.1", node="other"),
                        ep("10.42.0.2", ready=False, serving=True, terminating=True),
                        ep("10.42.0.3", ready=False, serving=False, terminating=True)]))
    sm: dict = {}  # type: ignore[type-arg]
    em: dict = {}  # type: ignore[type-arg]
    st.apply(sm)
    et.apply(em)
    views = ServiceViews("node-a")
    views.update(sm, em)
    (v,) = views.views.values()
    assert [e.ip for e in v.cluster] == ["10.42.0.1"]
    assert [e.ip for e in v.local] == ["10.42.0.2"]  # only a serving terminating one
    assert [e.ip for e in v.internal] == ["10.42.0.2"]


def test_views_follow_only_the_ports_a_sync_is_given() -> None:
    st, et = ServiceChangeTracker(), EndpointsChangeTracker()
    sm: dict = {}  # type: ignore[type-arg]
    em: dict = {}  # type: ignore[type-arg]
    for name, ip in (("a", "10.43.0.1"), ("b", "10.43.0.2")):
        st.update(None, svc(name, ip))
        et.update(eps(name, [ep("10.42.0.1")]))
    st.apply(sm)
    et.apply(em)
    views = ServiceViews("node-a")
    a, b = (ServicePortName("default", n, "http", "TCP") for n in "ab")
    assert views.update(sm, em) == {a, b}
    before = dict(views.views)
    et.update(eps("a", [ep("10.42.0.1"), ep("10.42.0.2")]))
    r = et.apply(em)
    assert r.ports == {a}
    assert views.update(sm, em, r.ports) == {a}
    assert views.views[b] is before[b] and views.views[a] is not before[a]
    # a change no category selects (a not-ready, not-serving endpoint): same view object
    et.update(eps("a", [ep("10.42.0.1"), ep("10.42.0.2"), ep("10.42.0.3", ready=False)]))
    r = et.apply(em)
    kept = views.views[a]
    assert views.update(sm, em, r.ports) == set() and views.views[a] is kept
    st.update(svc("a", "10.43.0.1"), None)
    rs = st.apply(sm)
    assert views.update(sm, em, rs.ports) == {a} and set(views.views) == {b}


async def test_nftables_partial_sync_keeps_shared_elements(monkeypatch: pytest.MonkeyPatch,
                                                           ) -> None:
    """Two ports of one service share the cluster IP and a load-balancing chain:
    removing one port must not take the IP out of cluster-ips nor the chain away;
    removing the service does the first. Only the changed port is rendered."""
    from kubenode.proxy import nfnetlink, nftables

    scripts: list[str] = []
    batches: list[dict[str, tuple[bytes, int]]] = []

    async def fake_nft(args: list[str], stdin: str | None = None) -> str:
        if stdin is not None:
            scripts.append(stdin)
        return '{"nftables": []}'

    def fake_commit(batch: nfnetlink.ElementBatch) -> None:
        batches.append(batch._sets)

    monkeypatch.setattr(nftables, "run_nft", fake_nft)
    monkeypatch.setattr(nfnetlink.ElementBatch, "commit", fake_commit)
    backend = nftables.NftablesBackend(table="t")
    st, et = ServiceChangeTracker(), EndpointsChangeTracker()
    sm: dict = {}  # type: ignore[type-arg]
    em: dict = {}  # type: ignore[type-arg]
    two = svc("s", "10.43.0.7", {"name": "a", "port": 80}, {"name": "b", "port": 81})
    st.update(None, two)
    et.update(eps("s", [ep("10.42.0.1")], {"name": "a", "port": 8080},
                  {"name": "b", "port": 8081}))
    st.apply(sm)
    et.apply(em)
    views = ServiceViews("n")
    views.update(sm, em)
    full_rules = await backend.sync(views.views, changed=None)
    assert "add element ip t cluster-ips { 10.43.0.7 }" in scripts[-1]
    # both ports share one load-balancing chain: their endpoints are map elements
    assert scripts[-1].count("add rule ip t lb-tcp-1 ") == 1
    assert ("add rule ip t lb-tcp-1 meta l4proto tcp dnat ip to ip daddr . tcp dport . "
            "numgen random mod 1 map @endpoints-tcp-gen1") in scripts[-1]
    assert "10.43.0.7 . tcp . 81 : goto lb-tcp-1" in scripts[-1]
    # the endpoints went over netlink, into generation 1 staged by the script before
    assert "add map ip t endpoints-tcp-gen1 " in scripts[-2]
    (elements, size), = batches[-1].values()
    assert list(batches[-1]) == ["endpoints-tcp-gen1"] and len(elements) == 2 * size
    assert "10.43.0.7 . 81 . 0" not in scripts[-1]

    one = svc("s", "10.43.0.7", {"name": "a", "port": 80})
    st.update(two, one)
    rules = await backend.sync(views.views, changed=views.update(sm, em, st.apply(sm).ports))
    script = scripts[-1]
    assert "10.43.0.7 . tcp . 81" in script and "10.43.0.7 . tcp . 80" not in script
    assert "cluster-ips {" not in script.replace("add set ip t cluster-ips {", "")
    assert "delete element ip t endpoints-tcp-gen1 { 10.43.0.7 . 81 . 0 }" in script
    assert "chain" not in script  # the shared chain stays: port a still uses it
    assert rules < full_rules

    st.update(one, None)
    rules = await backend.sync(views.views, changed=views.update(sm, em, st.apply(sm).ports))
    assert "delete element ip t cluster-ips { 10.43.0.7 }" in scripts[-1]
    calls = len(scripts)
    assert await backend.sync(views.views, changed=set()) == rules
    assert len(scripts) == calls  # nothing changed: no transaction


def test_config_file_and_durations(tmp_path: Path) -> None:
    assert parse_duration("1m0s") == 60 and parse_duration("500ms") == 0.5
    with pytest.raises(ConfigError):
        parse_duration("soon")
    f = tmp_path / "kp.yaml"
    f.write_text("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
                 "mode: iptables\nclusterCIDR: 10.42.0.0/16\n"
                 "clientConnection: {kubeconfig: /k}\n"
                 "iptables: {syncPeriod: 1m, minSyncPeriod: 2s, masqueradeAll: true}\n"
                 "healthzBindAddress: 127.0.0.1:0\n")
    cfg = ProxyConfig.from_file(f)
    assert (cfg.mode, cfg.cluster_cidr, cfg.kubeconfig) == ("iptables", "10.42.0.0/16", "/k")
    assert (cfg.sync_period, cfg.min_sync_period, cfg.masquerade_all) == (60, 2, True)
    assert cfg.healthz == ("127.0.0.1", 0)
    f.write_text("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
                 "mode: ipvs\n")
    with pytest.raises(ConfigError, match="unsupported proxy mode"):
        ProxyConfig.from_file(f)


async def test_sync_runner_coalesces_and_bounds() -> None:
    runs: list[float] = []
    loop = asyncio.get_running_loop()

    async def fn() -> None:
        runs.append(loop.time())

    r = SyncRunner(fn, min_interval=0.3, max_interval=0.8)
    task = asyncio.create_task(r.loop())
    try:
        await asyncio.sleep(0.05)
        assert len(runs) == 1  # first run at once
        for _ in range(10):  # a burst of requests -> one more run, min_interval later
            r.run()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.4)
        assert len(runs) == 2 and runs[1] - runs[0] >= 0.29
        await asyncio.sleep(0.9)  # nothing requested: the periodic run still happens
        assert len(runs) == 3
    finally:
        task.cancel()


class FlakyBackend:
    """A Backend fake: fails while `fail` is set, records full/partial."""

    name = "nftables"

    def __init__(self) -> None:
        self.fail = False
        self.calls: list[bool] = []

    async def sync(self, views: dict[object, object], *, changed: set[object] | None) -> int:
        self.calls.append(changed is None)
        if self.fail:
            raise RuntimeError("nft: boom")
        return len(views)

    async def cleanup(self) -> None:
        pass


async def test_failed_sync_marks_unhealthy_and_forces_full_resync() -> None:
    from kubenode.proxy.healthcheck import ProxierHealth
    from kubenode.proxy.metrics import ProxyMetrics
    from kubenode.proxy.proxier import Proxier

    clock = [1000.0]
    backend = FlakyBackend()
    health = ProxierHealth(now=lambda: clock[0], health_timeout=60)
    p = Proxier(backend=backend, node_name="n", conntrack=None,  # type: ignore[arg-type]
                metrics=ProxyMetrics.create(), health=health, min_sync_period=30)
    p.on_service_add(svc("a", "10.43.0.1"))
    await p.sync()
    assert backend.calls == []  # informers not synced yet: rules stay as they are
    p.on_services_synced()
    p.on_endpointslices_synced()
    await p.sync()
    assert backend.calls == [True] and health.healthy()
    p.on_service_add(svc("b", "10.43.0.2"))
    await p.sync()
    assert backend.calls[-1] is False  # partial
    backend.fail = True
    p.on_service_add(svc("c", "10.43.0.3"))
    await p.sync()
    assert not health.healthy()
    assert p.metrics.nftables_failures._value.get() == 1  # type: ignore[attr-defined]
    backend.fail = False
    await p.sync()
    assert backend.calls[-1] is True and health.healthy()  # full after a failure
    assert p.last_rule_count == 3  # the change that failed was not lost
    # a change queued for longer than health_timeout without a sync: unhealthy
    p.on_service_add(svc("d", "10.43.0.4"))
    clock[0] += 61
    assert not health.healthy()


def test_nftables_hairpin_elements_are_this_nodes_endpoints() -> None:
    """Only a pod on this node can reach itself through a service here: remote endpoints
    get no hairpin-endpoints element, local ones and those of no known node do."""
    from kubenode.proxy import nftables

    st, et = ServiceChangeTracker(), EndpointsChangeTracker()
    sm: dict = {}  # type: ignore[type-arg]
    em: dict = {}  # type: ignore[type-arg]
    st.update(None, svc("s", "10.43.0.9"))
    et.update(eps("s", [ep("10.42.0.1"), ep("10.42.0.2", node="elsewhere"),
                        ep("10.42.0.3", node="")]))
    st.apply(sm)
    et.apply(em)
    views = ServiceViews(NODE)
    views.update(sm, em)
    (view,) = views.views.values()
    frag = nftables.fragment(view, cluster_cidr=None, masquerade_all=False)
    assert frag.hairpin == {"10.42.0.1 . 10.42.0.1", "10.42.0.3 . 10.42.0.3"}
    # all three still receive traffic
    assert set(frag.maps["endpoints-tcp"].values()) == {
        "10.42.0.1 . 8080", "10.42.0.2 . 8080", "10.42.0.3 . 8080"}


def test_nftables_endpoint_elements_encoded_as_written() -> None:
    """The netlink encoding of the endpoint maps has exactly the text elements: two
    services claiming one external IP and port (a conflict) give one element per key,
    the last one's, as the text does (a key given twice would make the kernel refuse
    the whole batch)."""
    from kubenode.proxy import nfnetlink, nftables

    st, et = ServiceChangeTracker(), EndpointsChangeTracker()
    sm: dict = {}  # type: ignore[type-arg]
    em: dict = {}  # type: ignore[type-arg]
    for name, ip, pod in (("x", "10.43.0.21", "10.42.0.1"), ("y", "10.43.0.22", "10.42.0.2")):
        st.update(None, svc(name, ip, externalIPs=["10.43.201.5"]))
        et.update(eps(name, [ep(pod)]))
    st.apply(sm)
    et.apply(em)
    views = ServiceViews(NODE)
    views.update(sm, em)
    rs = nftables.build_ruleset(views.views.values(), cluster_cidr=None, service_cidrs=[])
    text, wire = rs.maps["endpoints-tcp"], rs.wire["endpoints-tcp"]
    assert set(wire) == set(text) == {"10.43.0.21 . 80 . 0", "10.43.0.22 . 80 . 0",
                                      "10.43.201.5 . 80 . 0"}
    for key, value in text.items():
        ip, port, i = key.split(" . ")
        eip, eport = value.split(" . ")
        assert wire[key] == nftables.packer(nftables.IPV4, "endpoints-tcp").pack(
            nftables.IPV4.pack(ip) + nfnetlink.inet_service(int(port)) + nfnetlink.u32(int(i)),
            nftables.IPV4.pack(eip) + nfnetlink.inet_service(int(eport)))


def test_dual_stack_addresses_from_config() -> None:
    """--cluster-cidr / --proxy-service-cidr lists split by family, and each family's
    healthCheckNodePort listeners bind an address of that family."""
    from kubenode.proxy.app import cidrs_of, health_bind_host

    assert cidrs_of("10.42.0.0/16, fd42::/56", "IPv6") == ["fd42::/56"]
    assert cidrs_of(["10.43.0.0/16", "fd43::/112"], "IPv4") == ["10.43.0.0/16"]
    assert cidrs_of(None, "IPv4") == []
    assert health_bind_host("0.0.0.0", "IPv6") == "::"
    assert health_bind_host("10.0.0.5", "IPv4") == "10.0.0.5"
    assert health_bind_host("fd00::1", "IPv6") == "fd00::1"
    assert health_bind_host("fd00::1", "IPv4") == "0.0.0.0"
