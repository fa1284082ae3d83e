"""kube-proxy metrics with upstream names (pkg/proxy/metrics), on a registry per
instance (no import-time globals)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

SYNC_BUCKETS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512,
                1.024, 2.048, 4.096, 8.192, 16.384)
PROGRAMMING_BUCKETS = (0.25, 0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                       17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
                       33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48,
                       49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 65, 70, 75, 80,
                       85, 90, 95, 100, 105, 110, 115, 120, 150, 180, 210, 240, 270, 300)


@dataclass(frozen=True, slots=True)
class ProxyMetrics:
    registry: CollectorRegistry
    sync_duration: Histogram
    sync_full_duration: Histogram
    sync_partial_duration: Histogram
    last_sync: Gauge
    last_queued: Gauge
    network_programming: Histogram
    endpoint_changes_total: Counter
    service_changes_total: Counter
    endpoint_changes_pending: Gauge
    service_changes_pending: Gauge
    no_local_endpoints: Gauge
    iptables_total: Gauge
    restore_failures: Counter
    nftables_failures: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> ProxyMetrics:
        r = registry or CollectorRegistry()
        p = "kubeproxy_"
        return cls(
            registry=r,
            sync_duration=Histogram(p + "sync_proxy_rules_duration_seconds",
                                    "SyncProxyRules latency in seconds", buckets=SYNC_BUCKETS,
                                    registry=r),
            sync_full_duration=Histogram(p + "sync_full_proxy_rules_duration_seconds",
                                         "SyncProxyRules latency in seconds for full resyncs",
                                         buckets=SYNC_BUCKETS, registry=r),
            sync_partial_duration=Histogram(
                p + "sync_partial_proxy_rules_duration_seconds",
                "SyncProxyRules latency in seconds for partial resyncs",
                buckets=SYNC_BUCKETS, registry=r),
            last_sync=Gauge(p + "sync_proxy_rules_last_timestamp_seconds",
                            "The last time proxy rules were successfully synced", registry=r),
            last_queued=Gauge(p + "sync_proxy_rules_last_queued_timestamp_seconds",
                              "The last time a sync of proxy rules was queued", registry=r),
            network_programming=Histogram(p + "network_programming_duration_seconds",
                                          "In Cluster Network Programming Latency in seconds",
                                          buckets=PROGRAMMING_BUCKETS, registry=r),
            endpoint_changes_total=Counter(p + "sync_proxy_rules_endpoint_changes",
                                           "Cumulative proxy rules Endpoint changes",
                                           registry=r),
            service_changes_total=Counter(p + "sync_proxy_rules_service_changes",
                                          "Cumulative proxy rules Service changes", registry=r),
            endpoint_changes_pending=Gauge(p + "sync_proxy_rules_endpoint_changes_pending",
                                           "Pending proxy rules Endpoint changes", registry=r),
            service_changes_pending=Gauge(p + "sync_proxy_rules_service_changes_pending",
                                          "Pending proxy rules Service changes", registry=r),
            no_local_endpoints=Gauge(p + "sync_proxy_rules_no_local_endpoints_total",
                                     "Number of services with a Local traffic policy and no "
                                     "endpoints", ["traffic_policy"], registry=r),
            iptables_total=Gauge(p + "sync_proxy_rules_iptables_total",
                                 "Total number of iptables rules owned by kube-proxy",
                                 ["table"], registry=r),
            restore_failures=Counter(p + "sync_proxy_rules_iptables_restore_failures",
                                     "Cumulative proxy iptables restore failures", registry=r),
            nftables_failures=Counter(p + "sync_proxy_rules_nftables_sync_failures",
                                      "Cumulative proxy nftables sync failures", registry=r),
        )
