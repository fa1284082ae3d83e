"""kube-proxy sync cost: N services x 10 endpoints (N = 1k, 5k, 10k), both backends:
time of the first full sync into an empty table, of a partial sync after one service's
endpoints change, of a periodic full resync with nothing changed, and the rule count.

Upstream anchor: kube-proxy's kubeproxy_sync_proxy_rules_duration_seconds and
BenchmarkSyncProxyRules (pkg/proxy/iptables/proxier_test.go); upstream reports
partial syncs of well under a second at 10k services on the nftables backend (KEP-3866).

Rules go into a table/chain prefix of their own (removed afterwards); VIPs and
endpoints are in 198.18.0.0/15 (RFC 2544 benchmarking range) and no node ports are
used, so nothing on this host is intercepted. Needs root.

    python -m bench proxy [--services 1000,5000,10000] [--endpoints 10] [--backend both]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from typing import Any

from bench import Report
from kubenode.proxy.healthcheck import ProxierHealth
from kubenode.proxy.iptables import IptablesBackend
from kubenode.proxy.metrics import ProxyMetrics
from kubenode.proxy.nftables import NftablesBackend
from kubenode.proxy.proxier import Backend, Proxier


def service(i: int) -> dict[str, Any]:
    ip = f"198.18.{i // 250}.{i % 250 + 1}"
    return {"metadata": {"name": f"svc-{i}", "namespace": "bench"},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80,
                                                 "protocol": "TCP"}]}}


def slice_(i: int, endpoints: int, gen: int = 0) -> dict[str, Any]:
    return {"metadata": {"name": f"svc-{i}-abc", "namespace": "bench",
                         "labels": {"kubernetes.io/service-name": f"svc-{i}"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080 + gen, "protocol": "TCP"}],
            "endpoints": [{"addresses": [f"198.19.{(i * endpoints + e) // 250 % 250}."
                                         f"{(i * endpoints + e) % 250 + 1}"],
                           "conditions": {"ready": True}, "nodeName": "n"}
                          for e in range(endpoints)]}


def make(kind: str) -> Backend:
    tag = secrets.token_hex(2)
    if kind == "nftables":
        return NftablesBackend(table=f"kpbench{tag}", cluster_cidr="10.42.0.0/16")
    return IptablesBackend(chain_prefix=f"KB{tag.upper()}", cluster_cidr="10.42.0.0/16")


async def run_one(kind: str, n: int, endpoints: int) -> list[Any]:
    backend = make(kind)
    proxier = Proxier(backend=backend, node_name="n", conntrack=None,
                      metrics=ProxyMetrics.create(), health=ProxierHealth(now=time.time))
    proxier.on_services_synced()
    proxier.on_endpointslices_synced()
    try:
        for i in range(n):
            proxier.on_service_add(service(i))
            proxier.on_endpointslice_add(slice_(i, endpoints))
        t0 = time.perf_counter()
        await proxier.sync()
        full = time.perf_counter() - t0
        assert proxier.health.healthy(), "full sync failed"
        rules = proxier.last_rule_count
        proxier.on_endpointslice_update(slice_(n // 2, endpoints),
                                        slice_(n // 2, endpoints, gen=1))
        t0 = time.perf_counter()
        await proxier.sync()
        partial = time.perf_counter() - t0
        assert proxier.health.healthy(), "partial sync failed"
        proxier.need_full_sync = True
        t0 = time.perf_counter()
        await proxier.sync()
        resync = time.perf_counter() - t0
        return [kind, n, endpoints, rules, full, partial, resync]
    finally:
        await backend.cleanup()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench proxy")
    ap.add_argument("--services", default="1000,5000,10000")
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--backend", choices=["nftables", "iptables", "both"], default="both")
    ap.add_argument("--iptables-max", type=int, default=1000,
                    help="skip larger sizes for iptables: iptables-nft restores of 10k "
                         "services take minutes and hold the xtables lock meanwhile")
    args = ap.parse_args(argv)
    report = Report(name="proxy", anchor="kube-proxy kubeproxy_sync_proxy_rules_duration_seconds"
                    " / BenchmarkSyncProxyRules",
                    columns=["backend", "services", "endpoints/svc", "rules",
                             "full sync s", "1-svc change s", "full resync s"])
    kinds = ["nftables", "iptables"] if args.backend == "both" else [args.backend]
    try:
        for n in (int(x) for x in args.services.split(",")):
            for kind in kinds:
                if kind == "iptables" and n > args.iptables_max:
                    report.notes.append(f"iptables at {n} services skipped (--iptables-max)")
                    continue
                row = asyncio.run(run_one(kind, n, args.endpoints))
                print(" ".join(map(str, row)), flush=True)
                report.add(*row)
    finally:
        report.notes.append("times include building the desired state in Python, rendering "
                            "and the one nft -f / iptables-restore transaction")
        report.emit()
    return 0
