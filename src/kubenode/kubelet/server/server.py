"""The kubelet API server: HTTPS on :10250 (authenticated, authorized) and plain-HTTP
healthz on 127.0.0.1:10248 (upstream pkg/kubelet/server/server.go).

Lifecycle: `KubeletServer(...)`; `await start()` binds both listeners (port 0 = pick a
free one; `.port` / `.healthz_port` tell which) -> serve -> `await stop()`. One aiohttp
app per listener, runner -> site -> cleanup.

Endpoints on the secure port (all behind auth.py's authn/authz):
  /healthz, /pods, /runningpods/, /containerLogs/{ns}/{pod}/{container},
  /exec|/attach/{ns}/{pod}[/{uid}]/{container}, /portForward/{ns}/{pod}[/{uid}],
  /run/{ns}/{pod}[/{uid}]/{container} (POST), /stats/summary, /metrics,
  /metrics/cadvisor, /metrics/resource, /metrics/probes, /configz,
  /logs/{path} (node logs: files and directory listings under `node_logs_dir`, /var/log).
Exec/attach/portForward ask the `StreamingProvider` for the runtime's streaming URL and
proxy the upgraded connection to it (proxy.py). Providers left None answer 501/404.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from kubenode.kubelet import logs as logreader
from kubenode.kubelet.server import auth
from kubenode.kubelet.server.providers import (
    BadRequest,
    LogLocator,
    NotFound,
    PodProvider,
    StatsProvider,
    StreamingProvider,
    StreamRequest,
)
from kubenode.kubelet.server.proxy import proxy_stream
from kubenode.kubelet.server.tls import ensure_self_signed, server_ssl_context
from kubenode.stats import metrics as statsmetrics

log = logging.getLogger(__name__)

USER_KEY = web.RequestKey("user", auth.UserInfo)
HealthCheck = Callable[[], Awaitable[str | None]]  # None = healthy, else the failure reason


@dataclass(frozen=True, kw_only=True)
class KubeletServerConfig:
    node_name: str
    address: str = "0.0.0.0"
    port: int = 10250
    healthz_address: str = "127.0.0.1"
    healthz_port: int = 10248          # 0 picks a free port; None-like (<0) disables
    tls_cert_file: str | None = None
    tls_private_key_file: str | None = None
    cert_dir: str = "/var/lib/kubelet/pki"
    client_ca_file: str | None = None
    anonymous_auth: bool = False
    host_names: tuple[str, ...] = ()    # extra SANs for the self-signed certificate
    kubelet_config: dict[str, Any] = field(default_factory=dict)  # for /configz
    log_poll_interval: float = 0.2
    run_timeout: float = 60.0
    node_logs_dir: str | None = "/var/log"   # /logs/; None disables


_TRUE = ("1", "true", "True", "TRUE")


def _bool(q: Any, name: str) -> bool:
    return str(q.get(name, "")) in _TRUE


def _text_error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message, content_type="text/plain")


class KubeletServer:
    def __init__(self, *, config: KubeletServerConfig, now: Callable[[], float],
                 pods: PodProvider | None = None, stats: StatsProvider | None = None,
                 logs: LogLocator | None = None, streaming: StreamingProvider | None = None,
                 authorizer: auth.Authorizer | None = None,
                 token_reviewer: auth.TokenReviewer | None = None,
                 kubelet_metrics: statsmetrics.KubeletMetrics | None = None,
                 probe_metrics: statsmetrics.ProbeMetrics | None = None,
                 health_checks: dict[str, HealthCheck] | None = None) -> None:
        self.config = config
        self._now = now
        self.pods = pods
        self.stats = stats
        self.logs = logs
        self.streaming = streaming
        self.authorizer: auth.Authorizer = authorizer or auth.AlwaysAllow()
        self.token_reviewer = token_reviewer
        self.kubelet_metrics = kubelet_metrics or statsmetrics.KubeletMetrics(
            node_name=config.node_name)
        self.probe_metrics = probe_metrics or statsmetrics.ProbeMetrics()
        self.health_checks = health_checks or {}
        self._runners: list[web.AppRunner] = []
        self.port = 0
        self.healthz_port = 0

    # -- lifecycle --------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext:
        c = self.config
        if c.tls_cert_file and c.tls_private_key_file:
            cert, key = c.tls_cert_file, c.tls_private_key_file
        else:
            names = [c.node_name, "localhost", "127.0.0.1", *c.host_names]
            cp, kp = ensure_self_signed(c.cert_dir, names, now=self._now)
            cert, key = str(cp), str(kp)
        return server_ssl_context(cert, key, c.client_ca_file)

    def secure_app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth_middleware])
        r = app.router
        r.add_get("/healthz", self._healthz)
        r.add_get("/healthz/{check}", self._healthz)
        r.add_get("/pods", self._pods)
        r.add_get("/pods/", self._pods)
        r.add_get("/runningpods/", self._running_pods)
        r.add_get("/runningpods", self._running_pods)
        r.add_get("/containerLogs/{ns}/{pod}/{container}", self._container_logs)
        for verb in ("exec", "attach"):
            for path in (f"/{verb}/{{ns}}/{{pod}}/{{container}}",
                         f"/{verb}/{{ns}}/{{pod}}/{{uid}}/{{container}}"):
                r.add_route("GET", path, self._stream)
                r.add_route("POST", path, self._stream)
        for path in ("/portForward/{ns}/{pod}", "/portForward/{ns}/{pod}/{uid}"):
            r.add_route("GET", path, self._stream)
            r.add_route("POST", path, self._stream)
        r.add_post("/run/{ns}/{pod}/{container}", self._run)
        r.add_post("/run/{ns}/{pod}/{uid}/{container}", self._run)
        r.add_get("/stats/summary", self._summary)
        r.add_post("/stats/summary", self._summary)
        r.add_get("/metrics", self._metrics)
        r.add_get("/metrics/cadvisor", self._metrics_cadvisor)
        r.add_get("/metrics/resource", self._metrics_resource)
        r.add_get("/metrics/probes", self._metrics_probes)
        r.add_get("/configz", self._configz)
        r.add_get("/logs", self._node_logs_redirect)
        r.add_get("/logs/{path:.*}", self._node_logs)
        return app

    def healthz_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/healthz/{check}", self._healthz)
        return app

    async def start(self) -> None:
        c = self.config
        runner = web.AppRunner(self.secure_app(), access_log=None, shutdown_timeout=2)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, c.address, c.port, ssl_context=self.ssl_context(),
                           reuse_address=True)
        await site.start()
        self.port = _bound_port(runner)
        if c.healthz_port >= 0:
            hr = web.AppRunner(self.healthz_app(), access_log=None, shutdown_timeout=1)
            await hr.setup()
            self._runners.append(hr)
            await web.TCPSite(hr, c.healthz_address, c.healthz_port,
                              reuse_address=True).start()
            self.healthz_port = _bound_port(hr)
        log.info("kubelet server listening port=%d healthz_port=%d", self.port,
                 self.healthz_port)

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(runner.cleanup(), timeout=5)
        self._runners.clear()

    # -- auth -------------------------------------------------------------------------
    async def authenticate(self, request: web.Request) -> auth.UserInfo | None:
        transport = request.transport
        if transport is not None and self.config.client_ca_file:
            user = auth.user_from_peercert(transport.get_extra_info("peercert"))
            if user is not None:
                return user
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            token = header[7:].strip()
            if token and self.token_reviewer is not None:
                return await self.token_reviewer.review_token(token)
            return None
        return auth.ANONYMOUS if self.config.anonymous_auth else None

    @web.middleware
    async def _auth_middleware(self, request: web.Request,
                               handler: Callable[[web.Request],
                                                 Awaitable[web.StreamResponse]]
                               ) -> web.StreamResponse:
        user = await self.authenticate(request)
        if user is None:
            return _text_error(401, "Unauthorized")
        attrs = auth.request_attributes(user=user, method=request.method,
                                        path=request.path, node_name=self.config.node_name)
        decision = await self.authorizer.authorize(attrs)
        if not decision.allowed:
            log.info("kubelet API forbidden user=%s verb=%s subresource=%s reason=%s",
                     user.name, attrs.verb, attrs.subresource, decision.reason)
            return _text_error(403, auth.forbidden_message(attrs))
        request[USER_KEY] = user
        try:
            return await handler(request)
        except NotFound as err:
            return _text_error(404, str(err))
        except BadRequest as err:
            return _text_error(400, str(err))

    # -- handlers ---------------------------------------------------------------------
    async def _healthz(self, request: web.Request) -> web.Response:
        failed = []
        for name, check in self.health_checks.items():
            reason = await check()
            if reason is not None:
                failed.append(f"[-]{name} failed: {reason}")
        if failed:
            return _text_error(500, "\n".join(failed) + "\nhealthz check failed")
        return web.Response(text="ok", content_type="text/plain")

    async def _pods(self, request: web.Request) -> web.Response:
        items = await self.pods.get_pods() if self.pods else []
        return web.json_response({"kind": "PodList", "apiVersion": "v1",
                                  "metadata": {}, "items": items})

    async def _running_pods(self, request: web.Request) -> web.Response:
        items = await self.pods.get_running_pods() if self.pods else []
        return web.json_response({"kind": "PodList", "apiVersion": "v1",
                                  "metadata": {}, "items": items})

    def log_options(self, q: Any) -> logreader.LogOptions:
        def nonneg(name: str, minimum: int) -> int | None:
            if name not in q:
                return None
            try:
                v = int(q[name])
            except ValueError:
                raise BadRequest(f"{name}: invalid value {q[name]!r}") from None
            if v < minimum:
                raise BadRequest(f"{name}: must be greater than or equal to {minimum}")
            return v

        if "sinceSeconds" in q and "sinceTime" in q:
            raise BadRequest("at most one of `sinceTime` or `sinceSeconds` may be specified")
        since: float | None = None
        secs = nonneg("sinceSeconds", 1)
        if secs is not None:
            since = self._now() - secs
        if "sinceTime" in q:
            t = logreader.parse_timestamp(q["sinceTime"].encode())
            if t is None:
                raise BadRequest(f"sinceTime: invalid value {q['sinceTime']!r}")
            since = t
        stream = q.get("stream")
        if stream not in (None, "All", "Stdout", "Stderr"):
            raise BadRequest(f"stream: Unsupported value: {stream!r}: supported values: "
                             '"All", "Stderr", "Stdout"')
        return logreader.LogOptions(
            follow=_bool(q, "follow"), since_time=since, timestamps=_bool(q, "timestamps"),
            tail_lines=nonneg("tailLines", 0), limit_bytes=nonneg("limitBytes", 1),
            stream=None if stream in (None, "All") else stream.lower())

    async def _container_logs(self, request: web.Request) -> web.StreamResponse:
        if self.logs is None:
            raise NotFound("container logs are not available")
        m = request.match_info
        q = request.query
        opts = self.log_options(q)
        previous = _bool(q, "previous")
        ref = await self.logs.container_log(namespace=m["ns"], pod=m["pod"],
                                            container=m["container"], previous=previous)
        still_running = ref.still_running
        if previous:
            async def never() -> bool:
                return False
            still_running = never
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        prepared = False

        async def write(data: bytes) -> None:
            nonlocal prepared
            if not prepared:
                await resp.prepare(request)
                prepared = True
            await resp.write(data)

        try:
            await logreader.read_logs(ref.path, opts, write, still_running=still_running,
                                      poll_interval=self.config.log_poll_interval)
        except FileNotFoundError:
            if not prepared:
                raise NotFound(f'container "{m["container"]}" in pod "{m["pod"]}" '
                               "has no log file") from None
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        if not prepared:
            await resp.prepare(request)
        await resp.write_eof()
        return resp

    def _stream_request(self, request: web.Request) -> StreamRequest:
        m = request.match_info
        q = request.query
        ports: list[int] = []
        for p in q.getall("port", []):
            try:
                ports.append(int(p))
            except ValueError:
                raise BadRequest(f"invalid port {p!r}") from None
        return StreamRequest(namespace=m["ns"], pod=m["pod"], uid=m.get("uid"),
                             container=m.get("container", ""),
                             command=tuple(q.getall("command", [])),
                             stdin=_bool(q, "stdin") or _bool(q, "input"),
                             stdout=_bool(q, "stdout") or _bool(q, "output"),
                             stderr=_bool(q, "stderr") or _bool(q, "error"),
                             tty=_bool(q, "tty"), ports=tuple(ports))

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if self.streaming is None:
            return _text_error(501, "streaming is not available")
        req = self._stream_request(request)
        kind = request.path.split("/")[1]
        if kind == "portForward":
            url = await self.streaming.get_port_forward(req)
        else:
            if not (req.stdin or req.stdout or req.stderr):
                raise BadRequest("you must specify at least 1 of stdin, stdout, stderr")
            if kind == "exec":
                if not req.command:
                    raise BadRequest("you must specify at least one command for the container")
                url = await self.streaming.get_exec(req)
            else:
                url = await self.streaming.get_attach(req)
        return await proxy_stream(request, url)

    async def _run(self, request: web.Request) -> web.Response:
        if self.streaming is None:
            return _text_error(501, "streaming is not available")
        req = self._stream_request(request)
        if not req.command:
            form = await request.post()
            cmd = str(form.get("cmd", "")).split()
            req = StreamRequest(namespace=req.namespace, pod=req.pod, uid=req.uid,
                                container=req.container, command=tuple(cmd))
        out = await self.streaming.run_in_container(req, exec_timeout=self.config.run_timeout)
        return web.Response(body=out, content_type="text/plain")

    async def _summary(self, request: web.Request) -> web.Response:
        if self.stats is None:
            raise NotFound("stats are not available")
        only = _bool(request.query, "only_cpu_and_memory")
        if request.method == "POST" and request.can_read_body:
            with contextlib.suppress(ValueError):
                body = await request.json()
                only = only or bool(body.get("only_cpu_and_memory"))
        return web.json_response(await self.stats.summary(only_cpu_and_memory=only),
                                 dumps=lambda o: json.dumps(o, indent=2))

    @staticmethod
    def _prom(body: bytes) -> web.Response:
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = statsmetrics.CONTENT_TYPE
        return resp

    async def _metrics(self, request: web.Request) -> web.Response:
        return self._prom(self.kubelet_metrics.render())

    async def _metrics_probes(self, request: web.Request) -> web.Response:
        return self._prom(self.probe_metrics.render())

    async def _metrics_cadvisor(self, request: web.Request) -> web.Response:
        if self.stats is None:
            raise NotFound("stats are not available")
        snap = await self.stats.snapshot()
        return self._prom(statsmetrics.render(statsmetrics.CadvisorCollector(snap)))

    async def _metrics_resource(self, request: web.Request) -> web.Response:
        if self.stats is None:
            raise NotFound("stats are not available")
        snap = await self.stats.snapshot()
        return self._prom(statsmetrics.render(statsmetrics.ResourceCollector(snap)))

    async def _node_logs_redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("/logs/")

    async def _node_logs(self, request: web.Request) -> web.StreamResponse:
        """As upstream's file server on /var/log: a file's bytes, or a directory's
        entries as links (directories end in "/")."""
        if self.config.node_logs_dir is None:
            raise NotFound("node logs are not served")
        rel = request.match_info["path"]
        if any(part == ".." for part in rel.split("/")):
            raise BadRequest("invalid path")
        root = Path(self.config.node_logs_dir)
        target = root.joinpath(*[p for p in rel.split("/") if p])
        if await asyncio.to_thread(target.is_dir):
            if rel and not rel.endswith("/"):
                # relative, as Go's http.FileServer: right behind the API server's proxy too
                raise web.HTTPMovedPermanently(quote(rel.rsplit("/", 1)[-1]) + "/")
            entries = await asyncio.to_thread(
                lambda: sorted(e.name + ("/" if e.is_dir() else "") for e in target.iterdir()))
            links = "".join(f'<a href="{html.escape(quote(e))}">{html.escape(e)}</a>\n'
                            for e in entries)
            return web.Response(text=f"<pre>\n{links}</pre>\n", content_type="text/html")
        if not await asyncio.to_thread(target.is_file):
            raise NotFound("404 page not found")
        return web.FileResponse(target)

    async def _configz(self, request: web.Request) -> web.Response:
        cfg = {"kind": "KubeletConfiguration",
               "apiVersion": "kubelet.config.k8s.io/v1beta1", **self.config.kubelet_config}
        return web.json_response({"kubeletconfig": cfg})


def _bound_port(runner: web.AppRunner) -> int:
    for site in runner.sites:
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            sock: socket.socket = server.sockets[0]
            return int(sock.getsockname()[1])
    return 0

