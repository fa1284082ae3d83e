"""The proxier: informer events -> change trackers -> debounced sync (upstream
pkg/proxy/{iptables,nftables}/proxier.go, minus the rule rendering which lives in the
backends).

State machine:
  NOT INITIALIZED -- services and endpointslices informers both synced --> READY
  READY: every change that is not a no-op calls `runner.run()`; the SyncRunner runs
  `sync()` at most once per min_sync_period and at least once per sync_period.
  sync(): apply pending changes to the service/endpoints maps, build the views, let the
  backend apply them in ONE transaction (full on the first sync, every sync_period and
  after any failure; partial otherwise), then flush stale UDP conntrack entries, update
  health check servers and metrics. A failed sync marks the proxier unhealthy and
  retries after min_sync_period with a full sync."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from kubenode.proxy.changetracker import (
    EndpointsChangeTracker,
    EndpointsMap,
    ServiceChangeTracker,
    ServicePortMap,
)
from kubenode.proxy.conntrack import ConntrackCleaner
from kubenode.proxy.healthcheck import ProxierHealth, ServiceHealthServer
from kubenode.proxy.metrics import ProxyMetrics
from kubenode.proxy.topology import ServiceView, ServiceViews, local_endpoint_counts
from kubenode.proxy.types import IPFamily, ServicePortName

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str

    async def sync(self, views: Mapping[ServicePortName, ServiceView], *,
                   changed: set[ServicePortName] | None) -> int:
        """Apply `views` (all of them) in one transaction; `changed`: the ports whose
        view differs from the previous call's (None: a full sync). Returns the rule
        count."""
        ...

    async def cleanup(self) -> None: ...


class SyncRunner:
    """Upstream async.BoundedFrequencyRunner: run fn at most every min_interval (later
    requests coalesce) and at least every max_interval."""

    def __init__(self, fn: Callable[[], Awaitable[None]], *, min_interval: float,
                 max_interval: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._fn = fn
        self.min_interval = min_interval
        self.max_interval = max_interval
        self._mono = monotonic
        self._event = asyncio.Event()
        self._last = float("-inf")

    def run(self) -> None:
        self._event.set()

    async def loop(self) -> None:
        while True:
            wait = self._last + self.max_interval - self._mono()
            if wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await self._event.wait()
                except TimeoutError:
                    pass
            gap = self._last + self.min_interval - self._mono()
            if gap > 0:
                await asyncio.sleep(gap)
            self._event.clear()
            self._last = self._mono()
            await self._fn()


class Proxier:
    def __init__(self, *, backend: Backend, node_name: str,
                 conntrack: ConntrackCleaner | None, metrics: ProxyMetrics,
                 health: ProxierHealth, service_health: ServiceHealthServer | None = None,
                 family: IPFamily = "IPv4",
                 min_sync_period: float = 1.0, sync_period: float = 30.0,
                 now: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.backend = backend
        self.node_name = node_name
        self.conntrack = conntrack
        self.metrics = metrics
        self.health = health
        self.service_health = service_health
        self.sync_period = sync_period
        self._now = now
        self._mono = monotonic
        self.family = family
        self.services = ServiceChangeTracker(family)
        self.endpoints = EndpointsChangeTracker(family)
        self.service_map: ServicePortMap = {}
        self.endpoints_map: EndpointsMap = {}
        self.views = ServiceViews(node_name)
        self.services_synced = False
        self.endpointslices_synced = False
        self.need_full_sync = True
        self._last_full = float("-inf")
        self.syncs = 0
        self.first_sync = asyncio.Event()
        self.last_rule_count = 0
        self.runner = SyncRunner(self.sync, min_interval=min_sync_period,
                                 max_interval=sync_period, monotonic=monotonic)

    # -- informer event handlers ------------------------------------------------------

    def _changed(self, pending: bool) -> None:
        self.metrics.service_changes_pending.set(self.services.pending_count())
        self.metrics.endpoint_changes_pending.set(self.endpoints.pending_count())
        if pending:
            self.health.queued(self.family)
            self.metrics.last_queued.set(self._now())
        if self.initialized:
            self.runner.run()

    def on_service_add(self, svc: dict[str, Any]) -> None:
        self.on_service_update(None, svc)

    def on_service_update(self, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        self.metrics.service_changes_total.inc()
        self._changed(self.services.update(old, new))

    def on_service_delete(self, svc: dict[str, Any]) -> None:
        self.metrics.service_changes_total.inc()
        self._changed(self.services.update(svc, None))

    def on_endpointslice_add(self, eps: dict[str, Any]) -> None:
        self.metrics.endpoint_changes_total.inc()
        self._changed(self.endpoints.update(eps))

    def on_endpointslice_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self.on_endpointslice_add(new)

    def on_endpointslice_delete(self, eps: dict[str, Any]) -> None:
        self.metrics.endpoint_changes_total.inc()
        self._changed(self.endpoints.update(eps, removed=True))

    def on_services_synced(self) -> None:
        self.services_synced = True
        if self.initialized:
            self.runner.run()

    def on_endpointslices_synced(self) -> None:
        self.endpointslices_synced = True
        if self.initialized:
            self.runner.run()

    @property
    def initialized(self) -> bool:
        return self.services_synced and self.endpointslices_synced

    # -- sync -------------------------------------------------------------------------

    async def sync(self) -> None:
        """syncProxyRules: never raises (failures are logged, counted, retried). Does
        nothing until both informers have synced: an empty rule set written at startup
        would cut every service off until the caches fill."""
        if not self.initialized:
            return
        try:
            await self._sync()
        except Exception:
            log.exception("sync proxy rules failed backend=%s family=%s", self.backend.name,
                          self.family)
            self.need_full_sync = True
            self.health.failed(self.family)
            if self.backend.name == "iptables":
                self.metrics.restore_failures.inc()
            else:
                self.metrics.nftables_failures.inc()
            loop = asyncio.get_running_loop()
            loop.call_later(self.runner.min_interval, self.runner.run)

    async def _sync(self) -> None:
        start = self._mono()
        full = self.need_full_sync or start - self._last_full >= self.sync_period
        svc_result = self.services.apply(self.service_map)
        ep_result = self.endpoints.apply(self.endpoints_map)
        self.metrics.service_changes_pending.set(0)
        self.metrics.endpoint_changes_pending.set(0)
        changed = self.views.update(self.service_map, self.endpoints_map,
                                    None if full else svc_result.ports | ep_result.ports)
        # a failure below must not lose these changes: the next (full) sync rebuilds
        # everything from the maps, which already hold them
        self.need_full_sync = True
        self.last_rule_count = await self.backend.sync(self.views.views,
                                                       changed=None if full else changed)
        self.need_full_sync = False
        if full:
            self._last_full = start
        self.syncs += 1

        if self.conntrack is not None:
            await self._clean_conntrack(svc_result.deleted_udp_cluster_ips,
                                        ep_result.stale_endpoints,
                                        ep_result.stale_service_names)
        local = self.views.local_policy.values()
        if self.service_health is not None:
            ports = {v.info.health_check_node_port: (v.name.namespace, v.name.name)
                     for v in local
                     if v.info.health_check_node_port and v.info.external_policy_local}
            await self.service_health.sync(ports, local_endpoint_counts(local))

        elapsed = self._mono() - start
        self.metrics.sync_duration.observe(elapsed)
        (self.metrics.sync_full_duration if full else
         self.metrics.sync_partial_duration).observe(elapsed)
        now = self._now()
        self.metrics.last_sync.set(now)
        for t in ep_result.trigger_times.values():
            if now >= t:
                self.metrics.network_programming.observe(now - t)
        self.metrics.no_local_endpoints.labels("internal").set(
            sum(1 for v in local if v.info.internal_policy_local and v.any_endpoints
                and not v.internal))
        self.metrics.no_local_endpoints.labels("external").set(
            sum(1 for v in local if v.info.external_policy_local and v.any_endpoints
                and not v.external))
        for table, n in (getattr(self.backend, "rule_counts", None) or {}).items():
            self.metrics.iptables_total.labels(table).set(n)
        self.health.updated(self.family)
        self.first_sync.set()
        log.debug("synced proxy rules backend=%s family=%s full=%s rules=%d elapsed=%.3fs",
                  self.backend.name, self.family, full, self.last_rule_count, elapsed)

    async def _clean_conntrack(self, deleted_ips: set[str], stale_eps: list[Any],
                               stale_services: set[Any]) -> None:
        ct = self.conntrack
        assert ct is not None
        for ip in sorted(deleted_ips):
            await ct.clear_service_ip(ip)
        for spn in sorted(stale_services):
            info = self.service_map.get(spn)
            if info is None:
                continue
            for ip in (info.cluster_ip, *info.external_ips, *info.load_balancer_ips):
                await ct.clear_service_ip(ip)
            if info.node_port:
                await ct.clear_node_port(node_port=info.node_port)
        for spn, ep in stale_eps:
            info = self.service_map.get(spn)
            if info is None:
                continue
            for ip in (info.cluster_ip, *info.external_ips, *info.load_balancer_ips):
                await ct.clear_endpoint(service_ip=ip, port=info.port, endpoint_ip=ep.ip)
            if info.node_port:
                await ct.clear_node_port(node_port=info.node_port, endpoint_ip=ep.ip)
