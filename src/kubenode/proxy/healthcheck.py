"""Health checking (upstream pkg/proxy/healthcheck).

`ProxierHealth` is the state behind :10256 /healthz and /livez, shared by the proxiers
of both IP families (state per family, as upstream's ProxierHealthServer): healthy
while every family's last sync succeeded and none has a queued change that waited
longer than `health_timeout` (upstream: 2 x syncPeriod). Body as upstream:
{"lastUpdated" (the latest of the families), "currentTime", "nodeEligible"}.

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
    last_updated: dict[str, float] = field(default_factory=dict)  # by family
    oldest_pending_queued: dict[str, float] = field(default_factory=dict)
    last_sync_failed: set[str] = field(default_factory=set)

    def queued(self, family: str = "IPv4") -> None:
        self.oldest_pending_queued.setdefault(family, self.now())

    def updated(self, family: str = "IPv4") -> None:
        self.last_updated[family] = self.now()
        self.oldest_pending_queued.pop(family, None)
        self.last_sync_failed.discard(family)

    def failed(self, family: str = "IPv4") -> None:
        self.last_sync_failed.add(family)

    def healthy(self) -> bool:
        if self.last_sync_failed:
            return False
        now = self.now()
        return all(now - t <= self.health_timeout for t in self.oldest_pending_queued.values())

    async def handle(self, request: web.Request) -> web.Response:
        last = max(self.last_updated.values(), default=0.0)
        body = {"lastUpdated": _iso(last), "currentTime": _iso(self.now()),
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
