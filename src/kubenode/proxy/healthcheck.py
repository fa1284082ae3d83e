"""Health checking (upstream pkg/proxy/healthcheck).

`ProxierHealth` is the state behind :10256 /healthz and /livez: healthy while the last
sync succeeded and no queued change waited longer than `health_timeout` (upstream:
2 x syncPeriod). Body as upstream: {"lastUpdated", "currentTime", "nodeEligible"}.

`ServiceHealthServer` answers each externalTrafficPolicy=Local service's
healthCheckNodePort with its local endpoint count:
{"service": {"namespace", "name"}, "localEndpoints": N, "serviceProxyHealthy": bool},
200 when N > 0, 503 otherwise (how cloud load balancers pick nodes)."""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

log = logging.getLogger(__name__)


def _iso(ts: float) -> str:
    if ts <= 0:
        return ""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S.%f +0000 UTC")


@dataclass(kw_only=True)
class ProxierHealth:
    now: Callable[[], float]
    health_timeout: float = 60.0
    last_updated: float = 0.0
    oldest_pending_queued: float = 0.0  # 0 = nothing queued
    last_sync_failed: bool = False

    def queued(self) -> None:
        if not self.oldest_pending_queued:
            self.oldest_pending_queued = self.now()

    def updated(self) -> None:
        self.last_updated = self.now()
        self.oldest_pending_queued = 0.0
        self.last_sync_failed = False

    def failed(self) -> None:
        self.last_sync_failed = True

    def healthy(self) -> bool:
        if self.last_sync_failed:
            return False
        waited = self.now() - self.oldest_pending_queued if self.oldest_pending_queued else 0.0
        return waited <= self.health_timeout

    async def handle(self, request: web.Request) -> web.Response:
        body = {"lastUpdated": _iso(self.last_updated), "currentTime": _iso(self.now()),
                "nodeEligible": True}
        return web.Response(status=200 if self.healthy() else 503, text=json.dumps(body),
                            content_type="application/json",
                            headers={"X-Content-Type-Options": "nosniff"})


@dataclass
class _Listener:
    runner: web.AppRunner
    namespace: str
    name: str


@dataclass
class ServiceHealthServer:
    bind_host: str = "0.0.0.0"
    local_endpoints: dict[tuple[str, str], int] = field(default_factory=dict)
    _listeners: dict[int, _Listener] = field(default_factory=dict)

    async def sync(self, services: dict[int, tuple[str, str]],
                   endpoints: dict[tuple[str, str], int]) -> None:
        """services: healthCheckNodePort -> (namespace, name)."""
        self.local_endpoints = dict(endpoints)
        for port in list(self._listeners):
            lst = self._listeners[port]
            if services.get(port) != (lst.namespace, lst.name):
                await lst.runner.cleanup()
                del self._listeners[port]
        for port, (ns, name) in services.items():
            if port in self._listeners:
                continue
            app = web.Application()
            app.router.add_get("/{tail:.*}", self._handler(ns, name))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            try:
                await web.TCPSite(runner, self.bind_host, port).start()
            except OSError as err:
                log.error("cannot open healthCheckNodePort port=%s service=%s/%s err=%s",
                          port, ns, name, err)
                await runner.cleanup()
                continue
            self._listeners[port] = _Listener(runner, ns, name)

    def _handler(self, ns: str, name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            n = self.local_endpoints.get((ns, name), 0)
            body = {"service": {"namespace": ns, "name": name}, "localEndpoints": n,
                    "serviceProxyHealthy": True}
            return web.Response(status=200 if n > 0 else 503, text=json.dumps(body),
                                content_type="application/json",
                                headers={"X-Content-Type-Options": "nosniff"})
        return handle

    async def close(self) -> None:
        for lst in self._listeners.values():
            await lst.runner.cleanup()
        self._listeners.clear()
