"""`ProxyServer`: kube-proxy as a component (run alone by `kubenode proxy`, or inside
`kubenode agent`).

    server = ProxyServer(config, client=api_client)   # client optional: else from
                                                       # config.kubeconfig (owned, closed)
    await server.run()          # until cancelled; rules stay in place on exit (as
                                # upstream: traffic keeps flowing across restarts)
    await server.ready.wait()   # set after every family's first successful sync

One proxier per IP family (upstream's dual-stack MetaProxier): IPv4, and IPv6 where the
kernel has it (and, for --proxy-mode iptables, ip6tables-restore). Each has its own
table or chains and trackers; they share the informers, healthz (healthy when both
are) and metrics. --cluster-cidr and --proxy-service-cidr may list CIDRs of both
families. Each serves healthCheckNodePorts on its family's address (the configured
one if of that family, else 0.0.0.0 / ::), counting its family's local endpoints.

run(): clean up the other backend's rules (switching --proxy-mode), start the healthz
(:10256 /healthz, /livez) and metrics (:10249 /metrics) listeners, start the Service
and EndpointSlice informers (label selector as upstream: not headless, no other
service proxy), mark the proxier initialized when both have synced, then run the
debounced sync loop. All long-lived tasks run under one TaskGroup.

`cleanup(config)` removes every rule of both backends (`kubenode proxy --cleanup`)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kubenode.client import ApiClient, Informer, ResourceEventHandler, load_kubeconfig
from kubenode.proxy.config import ProxyConfig
from kubenode.proxy.conntrack import Conntrack
from kubenode.proxy.healthcheck import ProxierHealth, ServiceHealthServer
from kubenode.proxy.iptables import IptablesBackend
from kubenode.proxy.metrics import ProxyMetrics
from kubenode.proxy.nftables import NftablesBackend
from kubenode.proxy.proxier import Backend, Proxier
from kubenode.proxy.types import FAMILIES, FAMILY_OF_VERSION, IPFamily, family_of

log = logging.getLogger(__name__)

PROXY_LABEL_SELECTOR = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"


def cidrs_of(value: str | list[str] | None, family: IPFamily) -> list[str]:
    """The CIDRs of `family` in a comma-separated list (or a list)."""
    items = value.split(",") if isinstance(value, str) else (value or [])
    out = []
    for item in (i.strip() for i in items):
        with contextlib.suppress(ValueError):
            version = ipaddress.ip_network(item, strict=False).version if item else 0
            if FAMILY_OF_VERSION.get(version) == family:
                out.append(item)
    return out


def make_backends(config: ProxyConfig, family: IPFamily = "IPv4") -> dict[str, Backend]:
    cluster_cidr = next(iter(cidrs_of(config.cluster_cidr, family)), None)
    return {
        "nftables": NftablesBackend(table=config.nft_table, cluster_cidr=cluster_cidr,
                                    service_cidrs=cidrs_of(config.service_cidrs, family),
                                    masquerade_all=config.masquerade_all, family=family),
        "iptables": IptablesBackend(chain_prefix=config.iptables_chain_prefix,
                                    cluster_cidr=cluster_cidr,
                                    masquerade_all=config.masquerade_all, family=family),
    }


def ip_families(mode: str) -> list[IPFamily]:
    """IPv4, and IPv6 when the kernel has it (and the iptables mode its ip6tables)."""
    if not Path("/proc/net/if_inet6").exists():
        return ["IPv4"]
    if mode == "iptables" and shutil.which("ip6tables-restore") is None:
        log.warning("ip6tables-restore not found: IPv6 services are not proxied")
        return ["IPv4"]
    return ["IPv4", "IPv6"]


def health_bind_host(configured: str, family: IPFamily) -> str:
    """Where `family`'s healthCheckNodePort listeners bind."""
    if family_of(configured) == family:
        return configured
    return "0.0.0.0" if family == "IPv4" else "::"


async def cleanup(config: ProxyConfig) -> None:
    for family in FAMILIES:
        for backend in make_backends(config, family).values():
            try:
                await backend.cleanup()
            except FileNotFoundError as err:  # no ip6tables: nothing of ours there
                log.warning("cleanup of backend=%s family=%s skipped err=%s",
                            backend.name, family, err)


class ProxyServer:
    def __init__(self, config: ProxyConfig, *, client: ApiClient | None = None,
                 now: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if config.mode not in ("nftables", "iptables"):
            raise ValueError(f'unsupported proxy mode "{config.mode}"')
        self.config = config
        self._client = client
        self.metrics = ProxyMetrics.create()
        self.health = ProxierHealth(now=now, health_timeout=2 * config.sync_period)
        self._others: list[Backend] = []
        self.proxiers: list[Proxier] = []
        for family in ip_families(config.mode):
            backends = make_backends(config, family)
            self.proxiers.append(Proxier(
                backend=backends.pop(config.mode), node_name=config.hostname_override,
                conntrack=Conntrack(family=family) if config.conntrack else None,
                metrics=self.metrics, health=self.health, family=family,
                service_health=ServiceHealthServer(bind_host=health_bind_host(
                    config.health_check_bind_address, family)),
                min_sync_period=config.min_sync_period, sync_period=config.sync_period,
                now=now, monotonic=monotonic))
            self._others += backends.values()
        self.ready = asyncio.Event()  # every family's first sync done
        # bound (host, port) of healthz and metrics once run() started (for port 0)
        self.addresses: list[tuple[str, int]] = []

    async def _serve(self) -> list[web.AppRunner]:
        runners = []
        health = web.Application()
        health.router.add_get("/healthz", self.health.handle)
        health.router.add_get("/livez", self.health.handle)
        metrics = web.Application()

        async def serve_metrics(request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.metrics.registry),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})

        metrics.router.add_get("/metrics", serve_metrics)
        metrics.router.add_get("/healthz", self.health.handle)
        for app, (host, port) in ((health, self.config.healthz),
                                  (metrics, self.config.metrics)):
            if port == 0 and not host:
                continue
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            try:
                await web.TCPSite(runner, host, port).start()
            except OSError as err:  # as upstream: the proxy keeps proxying without it
                log.error("cannot listen address=%s:%s err=%s", host, port, err)
                await runner.cleanup()
                continue
            runners.append(runner)
        return runners

    async def run(self) -> None:
        for other in self._others:
            try:
                await other.cleanup()
            except Exception as err:  # a missing tool must not stop the proxy
                log.warning("cleanup of backend=%s failed err=%s", other.name, err)
        client = self._client
        owned = client is None
        if client is None:
            if not self.config.kubeconfig:
                raise ValueError("kube-proxy needs --kubeconfig (or a client)")
            client = ApiClient(load_kubeconfig(self.config.kubeconfig))
        runners = await self._serve()
        self.addresses = [tuple(r.addresses[0][:2]) for r in runners]
        proxiers = self.proxiers

        def each(method: str) -> Callable[..., None]:
            def call(*args: Any) -> None:
                for p in proxiers:
                    getattr(p, method)(*args)
            return call

        services = Informer(client, "services", label_selector=PROXY_LABEL_SELECTOR)
        services.add_event_handler(ResourceEventHandler(
            on_add=each("on_service_add"), on_update=each("on_service_update"),
            on_delete=each("on_service_delete")))
        slices = Informer(client, "endpointslices", label_selector=PROXY_LABEL_SELECTOR)
        slices.add_event_handler(ResourceEventHandler(
            on_add=each("on_endpointslice_add"), on_update=each("on_endpointslice_update"),
            on_delete=each("on_endpointslice_delete")))

        async def mark_synced() -> None:
            await services.wait_for_sync()
            each("on_services_synced")()
            await slices.wait_for_sync()
            each("on_endpointslices_synced")()
            log.info("kube-proxy initialized mode=%s node=%s families=%s", self.config.mode,
                     self.config.hostname_override, ",".join(p.family for p in proxiers))
            for p in proxiers:
                await p.first_sync.wait()
            self.ready.set()

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(services.run(), name="proxy-services-informer")
                tg.create_task(slices.run(), name="proxy-endpointslices-informer")
                tg.create_task(mark_synced(), name="proxy-initialized")
                for p in proxiers:
                    tg.create_task(p.runner.loop(), name=f"proxy-sync-runner-{p.family}")
        finally:
            for p in proxiers:
                if p.service_health is not None:
                    await p.service_health.close()
            for r in runners:
                with contextlib.suppress(Exception):
                    await r.cleanup()
            if owned:
                await client.close()
