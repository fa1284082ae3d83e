"""iptables backend (upstream pkg/proxy/iptables): KUBE-SERVICES -> KUBE-SVC-<hash> ->
KUBE-SEP-<hash> chains in the nat table, REJECT/DROP for ports without endpoints in the
filter table, applied with ONE `iptables-restore --noflush` per table per sync. The
chain prefix (default KUBE) is configurable so tests can run beside a real kube-proxy.

Endpoint choice: `-m statistic --mode random --probability 1/(n-i)` for endpoint i of n;
ClientIP affinity: `-m recent --rcheck --seconds T --reap` before, `--set` on DNAT.
Full sync: every chain of ours is declared (which flushes it) and rewritten; chains
no longer wanted are flushed and deleted (`-X`). Partial sync: only chains whose rules
changed since the last successful sync are declared and rewritten. The jumps from the
built-in chains are ensured with `iptables -C || -I` on full syncs."""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from kubenode.proxy.topology import ServiceView, port_hash
from kubenode.proxy.types import ServicePortName

log = logging.getLogger(__name__)

MASQ_MARK = "0x4000"
MAX_CHAIN = 28


class IptablesError(RuntimeError):
    pass


@dataclass(slots=True)
class Tables:
    nat: dict[str, list[str]] = field(default_factory=dict)
    filter: dict[str, list[str]] = field(default_factory=dict)

    def rule_count(self) -> dict[str, int]:
        return {"nat": sum(map(len, self.nat.values())),
                "filter": sum(map(len, self.filter.values()))}


def _balance(rules: list[str], names: list[str], affinity: int, mask: str) -> None:
    """Sticky sources first (xt_recent), then endpoint i of n with probability 1/(n-i)."""
    if affinity:
        rules.extend(f"-m recent --name {n} --rcheck --seconds {affinity} --reap "
                     f"--mask {mask} --rsource -j {n}" for n in names)
    for i, n in enumerate(names):
        left = len(names) - i
        prob = "" if left == 1 else f"-m statistic --mode random --probability {1 / left:.10f} "
        rules.append(f"{prob}-j {n}")


async def _run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.PIPE if stdin is not None else None,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    return proc.returncode or 0, out.decode(), err.decode()


class IptablesBackend:
    name = "iptables"

    def __init__(self, *, chain_prefix: str = "KUBE", cluster_cidr: str | None = None,
                 masquerade_all: bool = False, variant: str = "",
                 family: str = "IPv4") -> None:
        """variant: "" for the host's `iptables` (what its alternatives point at), or
        "legacy" / "nft" for that variant's tools (upstream's image picks one with
        iptables-wrapper). family IPv6: the ip6tables tools."""
        if len(chain_prefix) > 8:
            raise ValueError("iptables chain prefix must be at most 8 characters")
        if variant not in ("", "legacy", "nft"):
            raise ValueError(f"unknown iptables variant {variant!r}")
        self.variant = variant
        self.family = family
        v6 = family == "IPv6"
        self.host = "/128" if v6 else "/32"
        self.mask = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff" if v6 else "255.255.255.255"
        self.loopback = "::1/128" if v6 else "127.0.0.0/8"
        self.p = chain_prefix
        self.cluster_cidr = cluster_cidr
        self.masquerade_all = masquerade_all
        self._applied: Tables | None = None
        self.rule_counts: dict[str, int] = {}
        self.last_script = ""

    def tool(self, name: str) -> str:
        """iptables, iptables-save, iptables-restore of the variant and family."""
        if self.family == "IPv6":
            name = name.replace("iptables", "ip6tables", 1)
        if not self.variant:
            return name
        head, _, tail = name.partition("-")
        return f"{head}-{self.variant}" + (f"-{tail}" if tail else "")

    def chain(self, kind: str, key: str) -> str:
        head = f"{self.p}-{kind}-"
        return head + port_hash(key, MAX_CHAIN - len(head))

    # -- rendering --------------------------------------------------------------------

    def build(self, views: list[ServiceView]) -> Tables:
        p, host, mask = self.p, self.host, self.mask
        t = Tables()
        nat, flt = t.nat, t.filter
        services, nodeports = f"{p}-SERVICES", f"{p}-NODEPORTS"
        mark = f"{p}-MARK-MASQ"
        nat[services] = []
        nat[nodeports] = []
        nat[mark] = [f"-j MARK --or-mark {MASQ_MARK}"]
        nat[f"{p}-POSTROUTING"] = [
            f"-m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
            f"-j MARK --xor-mark {MASQ_MARK}",
            '-m comment --comment "kubernetes service traffic requiring SNAT" '
            "-j MASQUERADE --random-fully"]
        fsvc, fext = f"{p}-SERVICES", f"{p}-EXTERNAL-SERVICES"
        flt[fsvc] = []
        flt[fext] = []

        for v in views:
            info = v.info
            proto = info.protocol.lower()
            key = f"{v.name}/{proto}"
            comment = f'-m comment --comment "{v.name} cluster IP"'
            match = f"-p {proto} -m {proto} --dport {info.port}"
            ext_ips = (*info.external_ips, *info.load_balancer_ips)
            np_match = f"-p {proto} -m {proto} --dport {info.node_port}"
            if not v.any_endpoints:
                flt[fsvc].append(f'-d {info.cluster_ip}{host} {match} -m comment --comment '
                                 f'"{v.name} has no endpoints" -j REJECT')
                for ip in ext_ips:
                    flt[fext].append(f"-d {ip}{host} {match} -j REJECT")
                if info.node_port:
                    flt[fext].append(f"-m addrtype --dst-type LOCAL {np_match} -j REJECT")
                continue
            svc_chain = self.chain("SVC", key)
            aff = info.session_affinity_timeout
            ep_chains: dict[tuple[str, int], str] = {}
            for ep in sorted({*v.cluster, *v.local}):
                sep = self.chain("SEP", f"{key}/{ep.ip}:{ep.port}")
                ep_chains[(ep.ip, ep.port)] = sep
                rules = [f"-s {ep.ip}{host} -j {mark}"]
                recent = (f"-m recent --name {sep} --set --mask {mask} --rsource "
                          if info.session_affinity_timeout else "")
                dest = f"{ep.ip}:{ep.port}" if host == "/32" else f"[{ep.ip}]:{ep.port}"
                rules.append(f"-p {proto} {recent}-m {proto} -j DNAT --to-destination {dest}")
                nat[sep] = rules

            internal = [ep_chains[(e.ip, e.port)] for e in v.internal]
            external = [ep_chains[(e.ip, e.port)] for e in v.external]
            if v.internal:
                nat[svc_chain] = []
                if self.masquerade_all:
                    nat[svc_chain].append(f"-d {info.cluster_ip}{host} {match} -j {mark}")
                elif self.cluster_cidr:
                    nat[svc_chain].append(f"! -s {self.cluster_cidr} -d {info.cluster_ip}{host} "
                                          f"{match} -j {mark}")
                _balance(nat.setdefault(svc_chain, []), internal, aff, mask)
                nat[services].append(f"-d {info.cluster_ip}{host} {match} {comment} "
                                     f"-j {svc_chain}")
            else:
                flt[fsvc].append(f'-d {info.cluster_ip}{host} {match} -m comment --comment '
                                 f'"{v.name} has no local endpoints" -j DROP')
            if not info.externally_accessible:
                continue
            if not v.external:
                for ip in ext_ips:
                    flt[fext].append(f"-d {ip}{host} {match} -j DROP")
                if info.node_port:
                    flt[fext].append(f"-m addrtype --dst-type LOCAL {np_match} -j DROP")
                continue
            ext = self.chain("EXT", key)
            rules = []
            if info.external_policy_local:
                svl = self.chain("SVL", key)
                _balance(nat.setdefault(svl, []), external, aff, mask)
                if v.internal and not info.internal_policy_local:
                    if self.cluster_cidr:
                        rules.append(f"-s {self.cluster_cidr} -j {svc_chain}")
                    rules.append(f"-m addrtype --src-type LOCAL -j {mark}")
                    rules.append(f"-m addrtype --src-type LOCAL -j {svc_chain}")
                rules.append(f"-j {svl}")
            else:
                rules.append(f"-j {mark}")
                if v.internal and not info.internal_policy_local:
                    rules.append(f"-j {svc_chain}")
                else:
                    cl = self.chain("SVC", key + "/external")
                    _balance(nat.setdefault(cl, []), external, aff, mask)
                    rules.append(f"-j {cl}")
            nat[ext] = rules
            for ip in ext_ips:
                nat[services].append(f"-d {ip}{host} {match} -j {ext}")
            if info.node_port:
                nat[nodeports].append(f"{np_match} -j {ext}")
        nat[services].append(f"-m addrtype --dst-type LOCAL ! -d {self.loopback} "
                             f"-j {nodeports}")
        return t

    def _script(self, table: str, desired: dict[str, list[str]],
                applied: dict[str, list[str]] | None, existing: set[str]) -> str:
        lines = [f"*{table}"]
        changed = [c for c, r in desired.items() if applied is None or applied.get(c) != r]
        stale = (existing if applied is None else set(applied)) - set(desired)
        for c in changed:
            lines.append(f":{c} - [0:0]")
        for c in sorted(stale):
            lines.append(f":{c} - [0:0]")  # declaring flushes it
        for c in changed:
            lines.extend(f"-A {c} {r}" for r in desired[c])
        for c in sorted(stale):
            lines.append(f"-X {c}")
        lines.append("COMMIT")
        return "\n".join(lines) + "\n"

    async def _our_chains(self, table: str) -> set[str]:
        rc, out, err = await _run(self.tool("iptables-save"), "-t", table)
        if rc != 0:
            raise IptablesError(f"iptables-save -t {table}: {err.strip()}")
        return {line[1:].split()[0] for line in out.splitlines()
                if line.startswith(f":{self.p}-")}

    def _jumps(self) -> list[tuple[str, str, str]]:
        p = self.p
        return [
            ("nat", "PREROUTING", f'-m comment --comment "{p} service portals" -j {p}-SERVICES'),
            ("nat", "OUTPUT", f'-m comment --comment "{p} service portals" -j {p}-SERVICES'),
            ("nat", "POSTROUTING", f'-m comment --comment "{p} postrouting rules" '
                                   f"-j {p}-POSTROUTING"),
            ("filter", "INPUT", f"-m conntrack --ctstate NEW -j {p}-EXTERNAL-SERVICES"),
            ("filter", "FORWARD", f"-m conntrack --ctstate NEW -j {p}-SERVICES"),
            ("filter", "FORWARD", f"-m conntrack --ctstate NEW -j {p}-EXTERNAL-SERVICES"),
            ("filter", "OUTPUT", f"-m conntrack --ctstate NEW -j {p}-SERVICES"),
        ]

    async def _ensure_jumps(self) -> None:
        for table, chain, rule in self._jumps():
            args = shlex.split(rule)
            iptables = self.tool("iptables")
            rc, _, _ = await _run(iptables, "-w", "-t", table, "-C", chain, *args)
            if rc != 0:
                rc, _, err = await _run(iptables, "-w", "-t", table, "-I", chain, "1", *args)
                if rc != 0:
                    raise IptablesError(f"iptables -I {chain}: {err.strip()}")

    async def sync(self, views: Mapping[ServicePortName, ServiceView], *,
                   changed: set[ServicePortName] | None) -> int:
        if changed is not None and not changed and self._applied is not None:
            return sum(self.rule_counts.values())
        desired = self.build([views[k] for k in sorted(views)])
        applied = None if changed is None else self._applied
        self._applied = None
        self.last_script = ""
        for table in ("filter", "nat"):
            want = getattr(desired, table)
            existing = await self._our_chains(table) if applied is None else set()
            script = self._script(table, want, None if applied is None else
                                  getattr(applied, table), existing)
            self.last_script += script
            rc, _, err = await _run(self.tool("iptables-restore"), "-w", "5", "--noflush",
                                    stdin=script)
            if rc != 0:
                raise IptablesError(f"iptables-restore ({table}): {err.strip()[:2000]}")
        if applied is None:
            await self._ensure_jumps()
        self._applied = desired
        self.rule_counts = desired.rule_count()
        return sum(self.rule_counts.values())

    async def cleanup(self) -> None:
        """Remove the jumps and every chain with our prefix."""
        self._applied = None
        for table, chain, rule in self._jumps():
            args = shlex.split(rule)
            while (await _run(self.tool("iptables"), "-w", "-t", table, "-D", chain,
                              *args))[0] == 0:
                pass
        for table in ("nat", "filter"):
            try:
                chains = await self._our_chains(table)
            except (IptablesError, FileNotFoundError):
                continue
            if not chains:
                continue
            lines = [f"*{table}", *(f":{c} - [0:0]" for c in sorted(chains)),
                     *(f"-X {c}" for c in sorted(chains)), "COMMIT"]
            rc, _, err = await _run(self.tool("iptables-restore"), "-w", "5", "--noflush",
                                    stdin="\n".join(lines) + "\n")
            if rc != 0:
                raise IptablesError(f"iptables cleanup ({table}): {err.strip()}")
