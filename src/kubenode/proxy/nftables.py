"""nftables backend (upstream pkg/proxy/nftables): one table per IP family (`ip` or
`ip6`, default name `kubenode`), changed by ONE `nft -f` transaction per sync (a full
sync prepares its endpoint maps before it: below). The layout is the same for both
families (ipv4_addr / ipv6_addr, `ip` / `ip6` expressions: Family).

Layout (names as upstream's kube-proxy table where the thing exists there):
  base chains   nat-prerouting/nat-output -> services; nat-postrouting -> masquerading;
                filter-input/forward/output (priority -110, before DNAT) ->
                service-endpoints-check / nodeport-endpoints-check (reject or drop
                ports without endpoints); filter-forward + filter-output-post-dnat ->
                cluster-ips-check (reject wrong ports of cluster IPs, drop unallocated
                service-CIDR addresses)
  sets          cluster-ips, hairpin-endpoints (ep . ep of this node's endpoints:
                masqueraded in masquerading)
  maps          service-ips (ip . proto . port -> goto), service-nodeports
                (proto . port -> goto), no-endpoint-services, no-endpoint-nodeports,
                endpoints-<proto>-gen<N> (ip . port . i -> endpoint ip . port),
                nodeport-endpoints-<proto>-gen<N> (port . i -> endpoint ip . port)
  shared chains lb-<proto>-<n>, ext-lb-<proto>-<n>, np-lb-<proto>-<n>: ONE rule choosing
                endpoint `numgen random mod n` of the port the packet was sent to, from
                `endpoints-<proto>` (by destination) or `nodeport-endpoints-<proto>` (by
                node port); the ext-/np- ones mark for masquerade first. One chain per
                (protocol, endpoint count) in use, whatever the number of services.
  per port      only for ClientIP session affinity or externalTrafficPolicy Local:
                service-<hash>-ns/name/proto/port, external-<hash>-..., local-/cluster-...
                (masquerade and traffic policy, `numgen random mod` endpoint choice),
                endpoint-<hash>-...__ip/port (affinity update, DNAT), affinity-<hash>-...
                sets (dynamic, timeout)

So a common service port is a handful of map elements and no rule: a table of 10k
services x 10 endpoints holds ~110k elements and a few dozen rules. Why: nft parses a
rule in ~30 µs but an element in a few, and a transaction that adds a rule with a jump
or a DNAT makes the kernel validate every chain reachable from the base chains (measured
on 6.18 with a chain per service: 54 ms of a 76 ms one-service change at 10k services);
with elements only, a change validates nothing of the kind. Named maps per service would
be worse: the kernel looks set names up linearly (10k named maps: 23 s to load).

Full sync: the endpoint maps (~90% of the elements) of generation N+1 are declared
empty, then filled over netlink (nfnetlink: nft would spend 1.4 s parsing 100k of
them); nothing reads them yet. Then one transaction declares everything, flushes every
chain and the other maps and refills them, points the shared chains at generation N+1
and deletes generation N and whatever else is no longer wanted (affinity sets that stay
are never flushed, so ClientIP affinity survives). So the data plane still moves from
the old state to the new one at a single commit; a failure before it leaves
generation N in use and N+1 for the next full sync to delete.

Partial sync: only the service ports whose view changed are rendered and diffed
against what the last successful sync applied for them; map and set elements are
added/removed one by one, their own chains flushed and rewritten or deleted; shared
chains are added when first needed and removed only by a full sync."""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import re
import socket
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kubenode.proxy import nfnetlink
from kubenode.proxy.topology import ServiceView
from kubenode.proxy.types import Endpoint, ServicePortName

log = logging.getLogger(__name__)

MASQ_MARK = "0x4000"
BASE_CHAINS: dict[str, str] = {
    "nat-prerouting": "type nat hook prerouting priority dstnat; policy accept;",
    "nat-output": "type nat hook output priority -100; policy accept;",
    "nat-postrouting": "type nat hook postrouting priority srcnat; policy accept;",
    "filter-input": "type filter hook input priority -110; policy accept;",
    "filter-forward": "type filter hook forward priority -110; policy accept;",
    "filter-output": "type filter hook output priority -110; policy accept;",
    "filter-output-post-dnat": "type filter hook output priority -90; policy accept;",
}


@dataclass(frozen=True, slots=True)
class Family:
    """What the table says differently per IP family (one table per family, the same
    name, as upstream's kube-proxy tables)."""

    nft: str  # table family and address expression: ip, ip6
    addr: str  # address type
    loopback: str  # never a node port address (upstream: IPv4 localhost only)
    nfproto: int
    af: int
    addr_len: int

    def pack(self, ip: str) -> bytes:
        return socket.inet_pton(self.af, ip)

    def host_port(self, ip: str, port: int) -> str:
        return f"{ip}:{port}" if self.af == socket.AF_INET else f"[{ip}]:{port}"

    def decl(self, template: str) -> str:
        """A MAPS / ENDPOINT_MAPS declaration for this family."""
        return template.format(addr=self.addr, ip=self.nft)


FAMILIES = {"IPv4": Family("ip", "ipv4_addr", "127.0.0.0/8", nfnetlink.NFPROTO_IPV4,
                           socket.AF_INET, 4),
            "IPv6": Family("ip6", "ipv6_addr", "::1", nfnetlink.NFPROTO_IPV6, socket.AF_INET6,
                           16)}
IPV4 = FAMILIES["IPv4"]

MAPS: dict[str, str] = {
    "service-ips": "type {addr} . inet_proto . inet_service : verdict;",
    "service-nodeports": "type inet_proto . inet_service : verdict;",
    "no-endpoint-services": "type {addr} . inet_proto . inet_service : verdict;",
    "no-endpoint-nodeports": "type inet_proto . inet_service : verdict;",
}
# per protocol: nft 1.0.6 cannot read back a `typeof ... th dport` key that rules use
# with a protocol match ("conflicting protocols specified: tcp vs. th"). In the table
# they are named <name>-gen<N>: a full sync fills generation N+1 over netlink while
# the rules still read generation N, then switches the rules over in its transaction.
ENDPOINT_MAPS: dict[str, str] = {
    **{f"endpoints-{p}": f"typeof {{ip}} daddr . {p} dport . numgen random mod 1 : "
                         f"{{ip}} daddr . {p} dport;" for p in ("tcp", "udp", "sctp")},
    **{f"nodeport-endpoints-{p}": f"typeof {p} dport . numgen random mod 1 : "
                                  f"{{ip}} daddr . {p} dport;" for p in ("tcp", "udp", "sctp")},
}


@functools.cache
def packer(family: Family, m: str) -> nfnetlink.ElementPacker:
    """Endpoint map m's element encoding. Key: address . port . index (node ports:
    port . index), data: address . port; ports and the index take 4 bytes each."""
    addr = family.addr_len
    return nfnetlink.ElementPacker(addr + 8 if m.startswith("endpoints-") else 8, addr + 4)


class NftError(RuntimeError):
    pass


@dataclass(slots=True)
class Ruleset:
    """The desired content of the table."""

    chains: dict[str, list[str]] = field(default_factory=dict)
    maps: dict[str, dict[str, str]] = field(default_factory=dict)
    sets: dict[str, str] = field(default_factory=dict)  # name -> declaration
    cluster_ips: set[str] = field(default_factory=set)
    hairpin: set[str] = field(default_factory=set)  # "ep . ep" pairs
    shared: set[str] = field(default_factory=set)  # shared chains used
    family: Family = IPV4
    # ENDPOINT_MAPS' elements as in `maps` (key -> element), encoded for netlink
    wire: dict[str, dict[str, bytes]] = field(default_factory=dict)

    def rule_count(self) -> int:
        """Rules and map elements (the few shared chains' rules not counted, so that the
        counts of service ports add up)."""
        return sum(len(r) for r in self.chains.values()) + sum(
            len(m) for m in self.maps.values())


def _empty(family: Family = IPV4) -> Ruleset:
    return Ruleset(maps={m: {} for m in (*MAPS, *ENDPOINT_MAPS)}, family=family)


def _proto(p: str) -> str:
    return p.lower()


def build_ruleset(views: Iterable[ServiceView], *, cluster_cidr: str | None,
                  service_cidrs: list[str], masquerade_all: bool = False,
                  cache: dict[ServicePortName, tuple[ServiceView, Ruleset]] | None = None,
                  family: Family = IPV4) -> Ruleset:
    """The whole desired table. `cache` (port -> (view, its fragment)) lets a sync reuse
    the rules of every service port whose view is the same object as last time
    (build_views reuses unchanged views; identity, not equality: hashing 10k views of
    10 endpoints each costs more than rendering them)."""
    fresh: dict[ServicePortName, tuple[ServiceView, Ruleset]] = {}
    rs = Ruleset(family=family)
    ip, loopback = family.nft, family.loopback
    ch = rs.chains
    for name in BASE_CHAINS:
        ch[name] = []
    ch["nat-prerouting"].append("jump services")
    ch["nat-output"].append("jump services")
    ch["nat-postrouting"].append("jump masquerading")
    ch["filter-input"] += ["ct state new jump nodeport-endpoints-check",
                           "ct state new jump service-endpoints-check"]
    ch["filter-forward"] += ["ct state new jump service-endpoints-check",
                             "ct state new jump cluster-ips-check"]
    ch["filter-output"].append("ct state new jump service-endpoints-check")
    ch["filter-output-post-dnat"].append("ct state new jump cluster-ips-check")
    ch["service-endpoints-check"] = [
        f"{ip} daddr . meta l4proto . th dport vmap @no-endpoint-services"]
    ch["nodeport-endpoints-check"] = [
        f"fib daddr type local {ip} daddr != {loopback} meta l4proto . th dport "
        "vmap @no-endpoint-nodeports"]
    ch["cluster-ips-check"] = [f"{ip} daddr @cluster-ips reject"]
    if service_cidrs:
        ch["cluster-ips-check"].append(f"{ip} daddr {{ {', '.join(service_cidrs)} }} drop")
    ch["mark-for-masquerade"] = [f"meta mark set meta mark or {MASQ_MARK}"]
    ch["masquerading"] = [f"ct status dnat {ip} saddr . {ip} daddr @hairpin-endpoints "
                          f"meta mark set meta mark or {MASQ_MARK}",
                          f"meta mark & {MASQ_MARK} == 0 return",
                          f"meta mark set meta mark xor {MASQ_MARK}",
                          "masquerade fully-random"]
    ch["reject-chain"] = ["reject"]
    ch["services"] = []
    if masquerade_all:
        ch["services"].append(f"{ip} daddr @cluster-ips jump mark-for-masquerade")
    elif cluster_cidr:
        # as a rule per service chain (upstream) would, minus 10k rules at 10k services:
        # packets to a cluster IP that no service port takes are rejected or dropped
        # by the filter chains, so their mark never reaches masquerading
        ch["services"].append(f"{ip} daddr @cluster-ips {ip} saddr != {cluster_cidr} "
                              "jump mark-for-masquerade")
    ch["services"] += [
        f"{ip} daddr . meta l4proto . th dport vmap @service-ips",
        f"fib daddr type local {ip} daddr != {loopback} meta l4proto . th dport "
        "vmap @service-nodeports"]
    for m in (*MAPS, *ENDPOINT_MAPS):
        rs.maps[m] = {}

    for v in views:
        hit = cache.get(v.name) if cache is not None else None
        if hit is not None and hit[0] is v:
            frag = hit[1]
        else:
            frag = fragment(v, cluster_cidr=cluster_cidr, masquerade_all=masquerade_all,
                            family=family)
        if cache is not None:
            fresh[v.name] = (v, frag)
        _merge(rs, frag)
        rs.cluster_ips |= frag.cluster_ips
        rs.hairpin |= frag.hairpin
    if cache is not None:
        cache.clear()
        cache.update(fresh)
    return rs


def _merge(into: Ruleset, frag: Ruleset) -> None:
    """A service port's chains, sets and map elements into `into` (not the shared
    cluster-ips and hairpin-endpoints sets: callers know whether they are shared)."""
    into.chains.update(frag.chains)
    into.sets.update(frag.sets)
    into.shared |= frag.shared
    for m, elems in frag.maps.items():
        if elems:
            into.maps[m].update(elems)
    for m, encoded in frag.wire.items():
        # as `maps`: of two ports claiming one key the last wins (the kernel would refuse
        # the batch for a key given twice with different data)
        into.wire.setdefault(m, {}).update(encoded)


def fragment(v: ServiceView, *, cluster_cidr: str | None, masquerade_all: bool,
             family: Family = IPV4) -> Ruleset:
    frag = _empty(family)
    _service_rules(v, frag, cluster_cidr=cluster_cidr, masquerade_all=masquerade_all)
    return frag


def _service_rules(v: ServiceView, rs: Ruleset, *, cluster_cidr: str | None,
                   masquerade_all: bool) -> None:
    """The chains, sets and map elements of one service port."""
    ch = rs.chains
    info = v.info
    proto = _proto(info.protocol)
    rs.cluster_ips.add(info.cluster_ip)
    cluster_key = f"{info.cluster_ip} . {proto} . {info.port}"
    ext_keys = [f"{ip} . {proto} . {info.port}"
                for ip in (*info.external_ips, *info.load_balancer_ips)]
    np_key = f"{proto} . {info.node_port}" if info.node_port else None

    if not v.any_endpoints:
        _no_endpoints(rs, [cluster_key, *ext_keys], np_key, "goto reject-chain")
        return

    aff_t = info.session_affinity_timeout
    if not aff_t and not info.external_policy_local:
        _shared_lb_elements(v, rs, cluster_key=cluster_key, ext_keys=ext_keys, np_key=np_key)
        return
    port_name = v.name.port or f"p{info.port}"
    suffix = f"{v.hash(8)}-{v.name.namespace}/{v.name.name}/{proto}/{port_name}"
    svc_chain = f"service-{suffix}"
    ext_chain = f"external-{suffix}"
    ep_targets: dict[tuple[str, int], str] = {}
    rs.hairpin.update(_hairpin_pairs(v))
    for ep in (*v.cluster, *v.local):
        if (ep.ip, ep.port) in ep_targets:
            continue
        dnat = f"meta l4proto {proto} dnat to {rs.family.host_port(ep.ip, ep.port)}"
        if not aff_t:
            ep_targets[(ep.ip, ep.port)] = dnat
            continue
        ep_name = f"endpoint-{suffix}__{ep.ip}/{ep.port}"[:250]
        ep_targets[(ep.ip, ep.port)] = ep_name
        aff = f"affinity-{suffix}__{ep.ip}/{ep.port}"[:250]
        rs.sets[aff] = f"type {rs.family.addr}; flags dynamic,timeout; timeout {aff_t}s;"
        ch[ep_name] = [f"update @{aff} {{ {rs.family.nft} saddr }}", dnat]

    if v.internal:
        rules: list[str] = []  # sources to mark are marked by one rule in `services`
        _balance([ep_targets[(e.ip, e.port)] for e in v.internal], aff_t, rules, rs.family)
        ch[svc_chain] = rules
        rs.maps["service-ips"][cluster_key] = f"goto {svc_chain}"
    else:  # iTP Local without local endpoints
        _no_endpoints(rs, [cluster_key], None, "drop")

    if not _takes_external(v, rs, ext_keys, np_key):
        return
    ext: list[str] = []
    if info.external_policy_local:
        local_chain = f"local-{suffix}"
        lrules: list[str] = []
        _balance([ep_targets[(e.ip, e.port)] for e in v.external], aff_t, lrules, rs.family)
        ch[local_chain] = lrules
        if v.cluster and v.internal and not info.internal_policy_local:
            if cluster_cidr:
                ext.append(f"{rs.family.nft} saddr {cluster_cidr} goto {svc_chain}")
            ext.append("fib saddr type local jump mark-for-masquerade")
            ext.append(f"fib saddr type local goto {svc_chain}")
        ext.append(f"goto {local_chain}")
    else:
        ext.append("jump mark-for-masquerade")
        if v.internal and not info.internal_policy_local:
            ext.append(f"goto {svc_chain}")
        else:
            cl = f"cluster-{suffix}"
            crules: list[str] = []
            _balance([ep_targets[(e.ip, e.port)] for e in v.external], aff_t, crules,
                     rs.family)
            ch[cl] = crules
            ext.append(f"goto {cl}")
    ch[ext_chain] = ext
    for k in ext_keys:
        rs.maps["service-ips"][k] = f"goto {ext_chain}"
    if np_key:
        rs.maps["service-nodeports"][np_key] = f"goto {ext_chain}"


def _no_endpoints(rs: Ruleset, keys: list[str], np_key: str | None, verdict: str) -> None:
    """Traffic to these keys (and node port) has nowhere to go: reject it when the port
    has no endpoints at all, drop it when only the traffic policy leaves none."""
    for k in keys:
        rs.maps["no-endpoint-services"][k] = verdict
    if np_key:
        rs.maps["no-endpoint-nodeports"][np_key] = verdict


def _takes_external(v: ServiceView, rs: Ruleset, ext_keys: list[str],
                    np_key: str | None) -> bool:
    """Whether external traffic (external and load-balancer IPs, node port) goes on to
    endpoints: not when the port has none of those, nor when externalTrafficPolicy
    Local leaves no local endpoint (then that traffic is dropped)."""
    if not v.info.externally_accessible:
        return False
    if not v.external:
        _no_endpoints(rs, ext_keys, np_key, "drop")
        return False
    return True


def _shared_lb_elements(v: ServiceView, rs: Ruleset, *, cluster_key: str,
                        ext_keys: list[str], np_key: str | None) -> None:
    """A service port without session affinity or a Local external policy: map
    elements pointing at the shared load-balancing chains, and its endpoints as
    elements of `endpoints-<proto>` / `nodeport-endpoints-<proto>` (index i of n)."""
    info = v.info
    proto = _proto(info.protocol)
    rs.hairpin.update(_hairpin_pairs(v))
    eps_map = f"endpoints-{proto}"
    port = _inet_service(info.port)
    if v.internal:
        targets = _unique(v.internal)
        rs.maps["service-ips"][cluster_key] = f"goto {_lb_chain(rs, 'lb', proto, len(targets))}"
        _endpoint_elements(rs, eps_map, f"{info.cluster_ip} . {info.port}",
                           rs.family.pack(info.cluster_ip) + port, targets)
    else:  # iTP Local without local endpoints
        _no_endpoints(rs, [cluster_key], None, "drop")
    if not _takes_external(v, rs, ext_keys, np_key):
        return
    targets = _unique(v.external)
    if ext_keys:
        chain = _lb_chain(rs, "ext-lb", proto, len(targets))
        for ip, k in zip((*info.external_ips, *info.load_balancer_ips), ext_keys, strict=True):
            rs.maps["service-ips"][k] = f"goto {chain}"
            _endpoint_elements(rs, eps_map, f"{ip} . {info.port}", rs.family.pack(ip) + port,
                               targets)
    if np_key:
        rs.maps["service-nodeports"][np_key] = \
            f"goto {_lb_chain(rs, 'np-lb', proto, len(targets))}"
        _endpoint_elements(rs, f"nodeport-endpoints-{proto}", str(info.node_port),
                           _inet_service(info.node_port), targets)


def _hairpin_pairs(v: ServiceView) -> list[str]:
    """`hairpin-endpoints` elements: endpoints on this node (or of no known node). Only
    a pod here can reach itself through a service here, so a node holds ~maxPods of
    them, not one per endpoint of the cluster."""
    return [f"{ep.ip} . {ep.ip}" for ep in v.local] + [
        f"{ep.ip} . {ep.ip}" for ep in v.cluster if not ep.node_name]


def _unique(eps: tuple[Endpoint, ...]) -> list[tuple[str, int]]:
    return list(dict.fromkeys((ep.ip, ep.port) for ep in eps))


_inet_service = functools.cache(nfnetlink.inet_service)
_u32 = functools.cache(nfnetlink.u32)


def _endpoint_elements(rs: Ruleset, m: str, key: str, key_wire: bytes,
                       targets: list[tuple[str, int]]) -> None:
    """Elements `key . i : endpoint i` of endpoint map m, as text and encoded."""
    into = rs.maps[m]
    wire = rs.wire.setdefault(m, {})
    pack, addr = packer(rs.family, m).pack, rs.family.pack
    for i, (ip, port) in enumerate(targets):
        k = f"{key} . {i}"
        into[k] = f"{ip} . {port}"
        wire[k] = pack(key_wire + _u32(i), addr(ip) + _inet_service(port))


def _lb_chain(rs: Ruleset, kind: str, proto: str, n: int) -> str:
    """The shared chain choosing one of n endpoints for `proto` (noted in `rs`; its
    rules depend on the endpoint maps' generation: shared_rules)."""
    name = f"{kind}-{proto}-{n}"
    rs.shared.add(name)
    return name


def shared_rules(name: str, maps: Mapping[str, str], family: Family) -> list[str]:
    """The rules of shared chain `name` (<kind>-<proto>-<n>), reading the endpoint maps
    named by `maps` (ENDPOINT_MAPS name -> name in the table)."""
    kind, proto, n = name.rsplit("-", 2)
    if kind == "np-lb":
        key, m = f"{proto} dport", maps[f"nodeport-endpoints-{proto}"]
    else:
        key, m = f"{family.nft} daddr . {proto} dport", maps[f"endpoints-{proto}"]
    rules = [f"meta l4proto {proto} dnat {family.nft} to {key} . numgen random mod {n} "
             f"map @{m}"]
    if kind != "lb":  # node ports, external and load-balancer IPs: masquerade
        rules.insert(0, "jump mark-for-masquerade")
    return rules


def _balance(targets: list[str], affinity: int, chain: list[str], family: Family) -> None:
    """Rules of a service port's own chain (session affinity or a Local external
    policy) choosing one endpoint: sticky sources first, then endpoint i of n with
    `numgen random mod (n-i) == 0` (probability 1/(n-i), as iptables' statistic match).
    A target is an endpoint chain (session affinity: it updates the affinity set) or,
    without affinity, the endpoint's DNAT statement itself. Not one `numgen random mod n
    vmap { ... }` as upstream writes it: every such vmap is an anonymous set, and nft
    1.0.6 (Debian 12) handles anonymous sets in quadratic time."""
    def action(t: str) -> str:
        return f"goto {t}" if t.startswith("endpoint-") else t
    if affinity:
        for n in targets:
            chain.append(f"{family.nft} saddr @affinity-{n.removeprefix('endpoint-')} goto {n}")
    for i, n in enumerate(targets):
        left = len(targets) - i
        chain.append(f"numgen random mod {left} == 0 {action(n)}" if left > 1 else action(n))


def render(table: str, desired: Ruleset, applied: Ruleset | None,
           existing_chains: set[str], existing_sets: set[str],
           maps: Mapping[str, str]) -> str:
    """The `nft -f` script moving the table from `applied` (None: unknown -> full) to
    `desired`. `existing_*` are the table's objects when doing a full sync. `maps`
    names the endpoint maps in the table (ENDPOINT_MAPS name -> generation's name); a
    full sync has filled them already (stage_endpoint_maps) and writes none of their
    elements here."""
    fam = desired.family
    t = f"{fam.nft} {table}"
    out = [f"add table {t} {{ comment \"rules for kubenode kube-proxy\" ; }}"]
    full = applied is None
    for name, decl in desired.sets.items():
        if full or name not in applied.sets:  # type: ignore[union-attr]
            out.append(f"add set {t} {name} {{ {decl} }}")
    out.append(f"add set {t} cluster-ips {{ type {fam.addr}; }}")
    out.append(f"add set {t} hairpin-endpoints {{ type {fam.addr} . {fam.addr}; }}")
    for name, decl in MAPS.items():
        out.append(f"add map {t} {name} {{ {fam.decl(decl)} }}")
    for name, decl in ENDPOINT_MAPS.items():
        out.append(f"add map {t} {maps[name]} {{ {fam.decl(decl)} }}")
    shared = desired.shared if full else desired.shared - applied.shared  # type: ignore[union-attr]
    for name in (*desired.chains, *sorted(shared)):
        if not full and name in applied.chains:  # type: ignore[union-attr]
            continue
        hook = BASE_CHAINS.get(name)
        out.append(f"add chain {t} {name}" + (f" {{ {hook} }}" if hook else ""))

    # maps first (they reference chains that may go away)
    if full:
        out.append(f"flush set {t} cluster-ips")
        if desired.cluster_ips:
            ips = ", ".join(sorted(desired.cluster_ips))
            out.append(f"add element {t} cluster-ips {{ {ips} }}")
        out.append(f"flush set {t} hairpin-endpoints")
        if desired.hairpin:
            out.append(f"add element {t} hairpin-endpoints {{ {', '.join(desired.hairpin)} }}")
        for m in MAPS:
            out.append(f"flush map {t} {m}")
            if elems := desired.maps[m]:
                body = ", ".join(f"{k} : {v}" for k, v in elems.items())
                out.append(f"add element {t} {m} {{ {body} }}")
    else:
        assert applied is not None
        gone = applied.cluster_ips - desired.cluster_ips
        new = desired.cluster_ips - applied.cluster_ips
        if gone:
            out.append(f"delete element {t} cluster-ips {{ {', '.join(sorted(gone))} }}")
        if new:
            out.append(f"add element {t} cluster-ips {{ {', '.join(sorted(new))} }}")
        gone = applied.hairpin - desired.hairpin
        new = desired.hairpin - applied.hairpin
        if gone:
            out.append(f"delete element {t} hairpin-endpoints {{ {', '.join(gone)} }}")
        if new:
            out.append(f"add element {t} hairpin-endpoints {{ {', '.join(new)} }}")
        for m, elems in desired.maps.items():
            old = applied.maps.get(m, {})
            dels = [k for k, v in old.items() if elems.get(k) != v]
            adds = [f"{k} : {v}" for k, v in elems.items() if old.get(k) != v]
            if dels:
                out.append(f"delete element {t} {maps.get(m, m)} {{ {', '.join(dels)} }}")
            if adds:
                out.append(f"add element {t} {maps.get(m, m)} {{ {', '.join(adds)} }}")

    for name, rules in (*desired.chains.items(),
                        *((n, shared_rules(n, maps, fam)) for n in sorted(shared))):
        if not full and applied.chains.get(name) == rules:  # type: ignore[union-attr]
            continue
        out.append(f"flush chain {t} {name}")
        out.extend(f"add rule {t} {name} {r}" for r in rules)

    if full:
        stale_chains = existing_chains - set(desired.chains) - desired.shared
        stale_sets = existing_sets - set(desired.sets) - {
            "cluster-ips", "hairpin-endpoints", *MAPS, *maps.values()}
    else:  # shared chains stay until a full sync
        stale_chains = set(applied.chains) - set(desired.chains)  # type: ignore[union-attr]
        stale_sets = set(applied.sets) - set(desired.sets)  # type: ignore[union-attr]
    for name in sorted(stale_chains):
        out.append(f"flush chain {t} {name}")
    for name in sorted(stale_chains):
        out.append(f"delete chain {t} {name}")
    for name in sorted(stale_sets):
        out.append(f"delete set {t} {name}")
    return "\n".join(out) + "\n"


def stage_endpoint_maps(table: str, maps: Mapping[str, str], family: Family) -> str:
    """The `nft -f` script declaring a new generation of endpoint maps, empty (no rule
    reads them yet: filling them changes nothing until render()'s script commits)."""
    t = f"{family.nft} {table}"
    out = [f"add table {t} {{ comment \"rules for kubenode kube-proxy\" ; }}"]
    for name, decl in ENDPOINT_MAPS.items():
        out += [f"add map {t} {maps[name]} {{ {family.decl(decl)} }}",
                f"flush map {t} {maps[name]}"]
    return "\n".join(out) + "\n"


def generation_names(gen: int) -> dict[str, str]:
    """ENDPOINT_MAPS name -> the table's name for it in generation `gen`."""
    return {m: f"{m}-gen{gen}" for m in ENDPOINT_MAPS}


def generation(names: Iterable[str]) -> int:
    """The highest endpoint map generation among set names (0: none)."""
    gens = [int(m[1]) for n in names if (m := _GENERATION.fullmatch(n))]
    return max(gens, default=0)


_GENERATION = re.compile(r"(?:nodeport-)?endpoints-[a-z]+-gen(\d+)")


async def run_nft(args: list[str], stdin: str | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        "nft", *args, stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if proc.returncode != 0:
        raise NftError(f"nft {' '.join(args)}: {err.decode().strip()[:2000]}")
    return out.decode()


class NftablesBackend:
    """Renders and applies the table. Remembers, per service port, the fragment the
    last successful sync applied, and how many fragments hold each cluster IP and
    hairpin pair (shared between the ports of a service, or between services)."""

    name = "nftables"

    def __init__(self, *, table: str = "kubenode", cluster_cidr: str | None = None,
                 service_cidrs: list[str] | None = None, masquerade_all: bool = False,
                 family: str = "IPv4") -> None:
        self.family = FAMILIES[family]
        self.table = table
        self.cluster_cidr = cluster_cidr
        self.service_cidrs = list(service_cidrs or [])
        self.masquerade_all = masquerade_all
        self._frags: dict[ServicePortName, tuple[ServiceView, Ruleset]] = {}
        self._ips: Counter[str] = Counter()
        self._pairs: Counter[str] = Counter()  # hairpin-endpoints elements
        self._rules = 0
        self._shared: set[str] = set()  # shared chains in the table
        self._generation = 0  # of the endpoint maps the rules read; 0: unknown
        self._synced = False  # False: what the table holds is unknown -> full sync
        self.last_script = ""

    async def _existing(self) -> tuple[set[str], set[str]]:
        """Names of the chains and sets/maps the table has now (listing names only:
        listing the whole table costs ~10x more at 10k services)."""
        chains: set[str] = set()
        sets: set[str] = set()
        for what, names in (("chains", chains), ("sets", sets), ("maps", sets)):
            try:
                doc = json.loads(await run_nft(["-j", "-t", "list", what, self.family.nft]))
            except (NftError, ValueError):
                continue
            for item in doc.get("nftables", []):
                obj = item.get(what.rstrip("s"))
                if obj and obj.get("table") == self.table:
                    names.add(obj["name"])
        return chains, sets

    async def sync(self, views: Mapping[ServicePortName, ServiceView], *,
                   changed: set[ServicePortName] | None) -> int:
        if changed is None or not self._synced:
            return await self._full(views)
        return await self._partial(views, changed)

    async def _full(self, views: Mapping[ServicePortName, ServiceView]) -> int:
        frags = dict(self._frags)
        # No cycles among the ~10 objects per port built here: the collector would only
        # rescan the informer caches, repeatedly (0.27 s of a first 10k-service sync).
        gc.disable()
        try:
            desired = build_ruleset(views.values(),
                                    cluster_cidr=self.cluster_cidr,
                                    service_cidrs=self.service_cidrs,
                                    masquerade_all=self.masquerade_all, cache=frags,
                                    family=self.family)
        finally:
            gc.enable()
        chains, sets = await self._existing()
        gen = max(self._generation, generation(sets)) + 1
        maps = generation_names(gen)
        self._synced = False
        await run_nft(["-f", "-"], stage_endpoint_maps(self.table, maps, self.family))
        batch = nfnetlink.ElementBatch(self.table, self.family.nfproto)
        for m, encoded in desired.wire.items():
            batch.add(maps[m], b"".join(encoded.values()), packer(self.family, m).size)
        await asyncio.to_thread(batch.commit)
        await self._apply(render(self.table, desired, None, chains, sets, maps))
        self._generation = gen
        self._frags = frags
        self._ips, self._pairs = Counter(), Counter()
        for _, frag in frags.values():
            self._ips.update(frag.cluster_ips)
            self._pairs.update(frag.hairpin)
        self._rules = desired.rule_count()
        self._shared = desired.shared
        self._synced = True
        return self._rules

    async def _partial(self, views: Mapping[ServicePortName, ServiceView],
                       changed: set[ServicePortName]) -> int:
        """Only the changed ports' fragments: the old ones are `applied`, the new ones
        `desired`, and render() diffs the two. Two services claiming the same map key
        (the same external IP and port) is a conflict upstream leaves undefined too; a
        partial sync may drop the survivor's element until the next full sync."""
        if not changed:
            return self._rules
        old, new = _empty(self.family), _empty(self.family)
        fresh: dict[ServicePortName, tuple[ServiceView, Ruleset] | None] = {}
        ips: Counter[str] = Counter()
        pairs: Counter[str] = Counter()
        rules = self._rules
        for spn in changed:
            hit = self._frags.get(spn)
            if hit is not None:
                _merge(old, hit[1])
                ips.subtract(hit[1].cluster_ips)
                pairs.subtract(hit[1].hairpin)
                rules -= hit[1].rule_count()
            v = views.get(spn)
            if v is None:
                fresh[spn] = None
                continue
            frag = fragment(v, cluster_cidr=self.cluster_cidr,
                            masquerade_all=self.masquerade_all, family=self.family)
            fresh[spn] = (v, frag)
            _merge(new, frag)
            ips.update(frag.cluster_ips)
            pairs.update(frag.hairpin)
            rules += frag.rule_count()
        # a shared element goes when its last holder does, comes with its first
        for delta, refs, in_old, in_new in ((ips, self._ips, old.cluster_ips, new.cluster_ips),
                                            (pairs, self._pairs, old.hairpin, new.hairpin)):
            for key, d in delta.items():
                before = refs[key]
                if before > 0 and before + d <= 0:
                    in_old.add(key)
                elif before <= 0 < before + d:
                    in_new.add(key)
        # shared chains: added when first needed, left for the full sync to remove
        old.shared = self._shared
        await self._apply(render(self.table, new, old, set(), set(),
                                 generation_names(self._generation)))
        self._shared |= new.shared
        for spn, entry in fresh.items():
            if entry is None:
                self._frags.pop(spn, None)
            else:
                self._frags[spn] = entry
        for delta, refs in ((ips, self._ips), (pairs, self._pairs)):
            for key, d in delta.items():
                if refs[key] + d > 0:
                    refs[key] += d
                else:
                    del refs[key]
        self._rules = rules
        return rules

    async def _apply(self, script: str) -> None:
        self._synced = False
        self.last_script = script
        await run_nft(["-f", "-"], script)
        self._synced = True

    async def cleanup(self) -> None:
        self._synced = False
        self._frags.clear()
        try:
            await run_nft(["delete", "table", self.family.nft, self.table])
        except NftError as err:
            if "No such file" not in str(err):
                raise
