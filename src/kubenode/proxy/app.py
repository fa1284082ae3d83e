"""`ProxyServer`: kube-proxy as a component (run alone by `kubenode proxy`, or inside
`kubenode agent`).

    server = ProxyServer(config, client=api_client)   # client optional: else from
                                                       # config.kubeconfig (owned, closed)
    await server.run()          # until cancelled; rules stay in place on exit (as
                                # upstream: traffic keeps flowing across restarts)
    await server.ready.wait()   # set after the first successful sync

run(): clean up the other backend's rules (switching --proxy-mode), start the healthz
(:10256 /healthz, /livez) and metrics (:10249 /metrics) listeners, start the Service
and EndpointSlice informers (label selector as upstream: not headless, no other
service proxy), mark the proxier initialized when both have synced, then run the
debounced sync loop. All long-lived tasks run under one TaskGroup.

`cleanup(config)` removes every rule of both backends (`kubenode proxy --cleanup`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

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

log = logging.getLogger(__name__)

PROXY_LABEL_SELECTOR = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless"


def make_backends(config: ProxyConfig) -> dict[str, Backend]:
    service_cidrs = list(config.service_cidrs)
    return {
        "nftables": NftablesBackend(table=config.nft_table, cluster_cidr=config.cluster_cidr,
                                    service_cidrs=service_cidrs,
                                    masquerade_all=config.masquerade_all),
        "iptables": IptablesBackend(chain_prefix=config.iptables_chain_prefix,
                                    cluster_cidr=config.cluster_cidr,
                                    masquerade_all=config.masquerade_all),
    }


async def cleanup(config: ProxyConfig) -> None:
    for backend in make_backends(config).values():
        await backend.cleanup()


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
        backends = make_backends(config)
        self.backend = backends.pop(config.mode)
        self._others = list(backends.values())
        self.proxier = Proxier(
            backend=self.backend, node_name=config.hostname_override,
            conntrack=Conntrack() if config.conntrack else None, metrics=self.metrics,
            health=self.health,
            service_health=ServiceHealthServer(bind_host=config.health_check_bind_address),
            min_sync_period=config.min_sync_period, sync_period=config.sync_period,
            now=now, monotonic=monotonic)
        self.ready = self.proxier.first_sync
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
        p = self.proxier
        services = Informer(client, "services", label_selector=PROXY_LABEL_SELECTOR)
        services.add_event_handler(ResourceEventHandler(
            on_add=p.on_service_add, on_update=p.on_service_update,
            on_delete=p.on_service_delete))
        slices = Informer(client, "endpointslices", label_selector=PROXY_LABEL_SELECTOR)
        slices.add_event_handler(ResourceEventHandler(
            on_add=p.on_endpointslice_add, on_update=p.on_endpointslice_update,
            on_delete=p.on_endpointslice_delete))

        async def mark_synced() -> None:
            await services.wait_for_sync()
            p.on_services_synced()
            await slices.wait_for_sync()
            p.on_endpointslices_synced()
            log.info("kube-proxy initialized mode=%s node=%s", self.config.mode,
                     self.config.hostname_override)

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(services.run(), name="proxy-services-informer")
                tg.create_task(slices.run(), name="proxy-endpointslices-informer")
                tg.create_task(mark_synced(), name="proxy-initialized")
                tg.create_task(p.runner.loop(), name="proxy-sync-runner")
        finally:
            if p.service_health is not None:
                await p.service_health.close()
            for r in runners:
                with contextlib.suppress(Exception):
                    await r.cleanup()
            if owned:
                await client.close()
