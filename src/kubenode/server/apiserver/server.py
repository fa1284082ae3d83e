"""The API server: composition root of storage, registry, authentication, authorization,
admission and the HTTP endpoints (aiohttp runner -> TLS site -> cleanup).

Lifecycle: `start()` opens storage, creates the PKI and the admin kubeconfig, bootstraps
the default namespaces and the `kubernetes` service, then listens; `ready` is set when
requests are served. `stop()` closes listeners, then storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from kubenode.api import errors
from kubenode.server.apiserver import (
    bootstraptoken,
    discovery,
    handlers,
    metrics,
    metricsapi,
    noderestriction,
    openapi,
)
from kubenode.server.apiserver.admission import Admission
from kubenode.server.apiserver.authn import AuthenticationError, Authenticator, UserInfo
from kubenode.server.apiserver.authz import Authorizer
from kubenode.server.apiserver.pki import PKI, ensure_pki, write_kubeconfig
from kubenode.server.apiserver.registry import strategies
from kubenode.server.apiserver.registry.resources import (
    ResourceInfo,
    ResourceTable,
    default_resources,
)
from kubenode.server.apiserver.registry.store import Store
from kubenode.server.apiserver.requestinfo import RequestInfo, parse_request
from kubenode.server.apiserver.storage.interface import Storage

log = logging.getLogger(__name__)

PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version", "/version/")


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    data_dir: Path
    bind_address: str = "127.0.0.1"
    secure_port: int = 6443
    storage: str = "sqlite"
    etcd_servers: str = "http://127.0.0.1:2379"
    service_cluster_ip_range: str = "10.43.0.0/16"
    service_node_port_range: str = "30000-32767"
    token_auth_file: Path | None = None
    compaction_interval: float = 300.0
    bookmark_interval: float = 60.0
    advertise_address: str = ""
    kubelet_certificate_authority: Path | None = None


def make_storage(config: ServerConfig) -> Storage:
    if config.storage == "etcd":
        from kubenode.server.apiserver.storage.etcd import EtcdStorage
        return EtcdStorage(endpoints=[e.strip() for e in config.etcd_servers.split(",")])
    from kubenode.server.apiserver.storage.sqlite import SQLiteStorage
    return SQLiteStorage(path=config.data_dir / "db" / "state.db")


@dataclass(kw_only=True)
class APIServer:
    config: ServerConfig
    clock: Callable[[], float] = time.time
    storage: Storage | None = None
    table: ResourceTable = field(default_factory=lambda: ResourceTable(
        resources=default_resources()))
    stores: dict[tuple[str, str], Store] = field(default_factory=dict)
    authenticator: Authenticator = field(default_factory=Authenticator)
    authorizer: Authorizer | None = None
    virtual_handlers: dict[str, Callable[[dict[str, Any], UserInfo],
                                         Awaitable[dict[str, Any]]]] = field(
        default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    request_metrics: metrics.ApiserverMetrics = field(
        default_factory=metrics.ApiserverMetrics)
    openapi: openapi.OpenAPI | None = None
    port: int = 0
    _runner: web.AppRunner | None = None
    _kubelet_proxy: Any = None
    _metrics_api: Any = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def pki(self) -> PKI:
        return PKI(dir=self.config.data_dir / "pki")

    @property
    def kubeconfig_path(self) -> Path:
        return self.config.data_dir / "kubeconfig.yaml"

    def store(self, group: str, plural: str) -> Store:
        return self.stores[(group, plural)]

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        extra_ips = [cfg.bind_address] if cfg.bind_address not in ("0.0.0.0", "::") else []
        if cfg.advertise_address:
            extra_ips.append(cfg.advertise_address)
        extra_ips.append(strategies.kubernetes_service_ip(cfg.service_cluster_ip_range))
        await asyncio.to_thread(ensure_pki, self.pki, extra_ips=extra_ips, extra_dns=[])
        if self.storage is None:
            self.storage = make_storage(cfg)
        await self.storage.start()
        self.openapi = openapi.OpenAPI(table=self.table)
        admission = Admission(server=self)
        for info in self.table.resources:
            self.stores[(info.group, info.plural)] = strategies.make_store(
                info=info, storage=self.storage, clock=self.clock, config=cfg,
                admit=admission.admit_for(info))
        if cfg.token_auth_file is not None:
            from kubenode.server.apiserver.authn import load_token_file
            self.authenticator.static_tokens = load_token_file(cfg.token_auth_file)
        from kubenode.server.apiserver import serviceaccount
        self.sa_tokens = serviceaccount.TokenIssuer.from_key_file(self.pki.sa_key,
                                                                  clock=self.clock)
        sa_tokens = self.sa_tokens

        async def verify_service_account(token: str) -> UserInfo | None:
            return sa_tokens.verify(token)

        async def get_secret(namespace: str, name: str) -> dict[str, Any] | None:
            try:
                return await self.store("", "secrets").get(namespace, name)
            except errors.StatusError as err:
                if err.code == 404:
                    return None
                raise

        self.authenticator.token_verifiers += [
            verify_service_account,
            bootstraptoken.BootstrapTokenAuthenticator(get_secret=get_secret)]
        self.authorizer = Authorizer(server=self)
        from kubenode.server.apiserver import reviews
        self.virtual_handlers.update(reviews.handlers(self))
        await self._listen()
        await strategies.bootstrap(self)
        self._write_kubeconfig()
        self._tasks.append(asyncio.create_task(self._compactor(), name="compactor"))
        self.ready.set()
        log.info("apiserver listening address=%s port=%d", cfg.bind_address, self.port)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._runner is not None:
            await self._runner.cleanup()
        if self.storage is not None:
            await self.storage.close()

    def _write_kubeconfig(self) -> None:
        host = self.config.bind_address
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        write_kubeconfig(self.pki, path=self.kubeconfig_path,
                         server=f"https://{host}:{self.port}")

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.pki.serving_cert, self.pki.serving_key)
        ctx.load_verify_locations(self.pki.ca_cert)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    async def _listen(self) -> None:
        app = web.Application(client_max_size=handlers.MAX_BODY + 1024,
                              middlewares=[self._middleware])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        from kubenode.server.apiserver.protobuf import DescriptorSource
        app["protobuf"] = DescriptorSource()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.bind_address, self.config.secure_port,
                           ssl_context=self.ssl_context(), backlog=1024)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.secure_port

    async def _compactor(self) -> None:
        assert self.storage is not None
        interval = self.config.compaction_interval
        previous = await self.storage.current_revision()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.storage.compact(previous)
                previous = await self.storage.current_revision()
            except Exception:
                log.exception("compaction failed")

    # ------------------------------------------------------------------ HTTP
    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
        """Errors as Status objects; every request counted in the request metrics."""
        info = request["info"] = parse_request(
            request.method, request.path, watch=handlers.truthy(request.query.get("watch")))
        known = info.is_resource and (info.group == metricsapi.GROUP or self.table.lookup(
            info.group, info.version, info.resource) is not None)
        labels = metrics.labels_for(info, method=request.method,
                                    content_type=request.content_type,
                                    dry_run=request.query.get("dryRun") == "All", known=known)
        start = time.monotonic()
        observe = self.request_metrics.observe
        with self.request_metrics.track(info, labels):
            try:
                response = await handler(request)
            except errors.StatusError as err:
                response = handlers.status_response(err)
            except web.HTTPException as exc:
                observe(info, labels, exc.status, time.monotonic() - start)
                raise
            except (ConnectionResetError, asyncio.CancelledError):
                raise  # the client went away: no response to count
            except Exception as err:
                log.exception("request failed method=%s path=%s", request.method,
                              request.path)
                response = handlers.status_response(errors.internal_error(str(err)))
            observe(info, labels, response.status, time.monotonic() - start)
            return response

    async def authenticate(self, request: web.Request) -> UserInfo:
        peercert = request.transport.get_extra_info("peercert") if request.transport else None
        try:
            return await self.authenticator.authenticate(headers=request.headers,
                                                         peercert=peercert)
        except AuthenticationError as err:
            raise errors.unauthorized() from err

    async def impersonate(self, request: web.Request, user: UserInfo) -> UserInfo:
        """Impersonate-User / Impersonate-Group headers (kubectl --as / --as-group)."""
        name = request.headers.get("Impersonate-User")
        groups = request.headers.getall("Impersonate-Group", [])
        if not name:
            if groups:
                raise errors.bad_request("requested impersonation of groups without a user")
            return user
        assert self.authorizer is not None
        from kubenode.server.apiserver.authz import Attributes
        checks = [("users", name)] + [("groups", g) for g in groups]
        for resource, value in checks:
            allowed, _ = await self.authorizer.authorize(Attributes(
                user=user, verb="impersonate", is_resource=True, resource=resource,
                name=value))
            if not allowed:
                raise errors.StatusError(
                    code=403, reason="Forbidden", kind=resource, name=value,
                    message=f'{resource} "{value}" is forbidden: User "{user.name}" cannot '
                            f'impersonate resource "{resource}" in API group "" at the '
                            "cluster scope")
        all_groups = tuple(groups)
        if name.startswith("system:serviceaccount:"):
            ns = name.split(":")[2] if name.count(":") >= 3 else ""
            all_groups += ("system:serviceaccounts", f"system:serviceaccounts:{ns}")
        if name != "system:anonymous" and "system:authenticated" not in all_groups:
            all_groups += ("system:authenticated",)
        return UserInfo(name=name, groups=all_groups,
                        uid=request.headers.get("Impersonate-Uid", ""))

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        user = await self.impersonate(request, await self.authenticate(request))
        request["user"] = user
        info: RequestInfo = request["info"]
        assert self.authorizer is not None
        await self.authorizer.authorize_request(user, info)
        # Admission plugins that judge by requester (NodeRestriction) read this; each
        # request runs in its own task, so its own context.
        noderestriction.REQUEST.set((user, info))
        if info.is_resource and info.group == metricsapi.GROUP:
            return await self.metrics_api().handle(request, info)
        if info.is_resource:
            handlers.check_accept(request)
            return await handlers.ResourceHandler(self).handle(request, info, user)
        return await self._nonresource(request, info)

    async def _nonresource(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if path.startswith("/readyz") and not self.ready.is_set():
            return web.Response(status=500, text="[-]poststarthook/bootstrap failed: not "
                                                 "finished\nreadyz check failed\n")
        if path in ("/healthz", "/livez", "/readyz") or path.startswith(
                ("/healthz/", "/livez/", "/readyz/")):
            if "verbose" in request.query:
                return web.Response(text=f"[+]ping ok\n[+]etcd ok\n{path[1:]} check passed\n")
            return web.Response(text="ok")
        if path == "/version":
            return handlers.json_response(discovery.version_info())
        accept = request.headers.get("Accept", "")
        if path == "/api":
            agg = _aggregated_version(accept)
            if agg:
                return self._aggregated(legacy=True, version=agg)
            return handlers.json_response(discovery.api_versions(
                f"{self.config.bind_address}:{self.port}"))
        if path == "/apis":
            agg = _aggregated_version(accept)
            if agg:
                return self._aggregated(legacy=False, version=agg)
            groups = discovery.api_group_list(self.table)
            groups["groups"].append(metricsapi.discovery_group())
            return handlers.json_response(groups)
        metrics_doc = metricsapi.discovery_document(path)
        if metrics_doc is not None:
            return handlers.json_response(metrics_doc)
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            if not self.table.in_group_version("", parts[1]):
                raise _not_found()
            return handlers.json_response(discovery.api_resource_list(self.table, "",
                                                                      parts[1]))
        if parts[0] == "apis" and len(parts) == 2:
            if not any(g == parts[1] for g, _ in self.table.group_versions()):
                raise _not_found()
            return handlers.json_response(discovery.api_group(self.table, parts[1]))
        if parts[0] == "apis" and len(parts) == 3:
            if not self.table.in_group_version(parts[1], parts[2]):
                raise _not_found()
            return handlers.json_response(discovery.api_resource_list(self.table, parts[1],
                                                                      parts[2]))
        if path.startswith("/openapi/") or path == "/openapi":
            assert self.openapi is not None
            return self.openapi.serve(request, path)
        if path == "/.well-known/openid-configuration" or path == "/openid/v1/jwks":
            return handlers.json_response(self.sa_tokens.discovery(path, self.port))
        if path == "/metrics":
            return web.Response(body=self.request_metrics.exposition(),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})
        raise _not_found()

    def _aggregated(self, *, legacy: bool, version: str) -> web.Response:
        body = discovery.aggregated(self.table, legacy=legacy)
        if not legacy:
            body["items"].append(metricsapi.discovery_aggregated())
        body["apiVersion"] = f"apidiscovery.k8s.io/{version}"
        return web.Response(
            text=json.dumps(body), headers={
                "Content-Type": f"application/json;g=apidiscovery.k8s.io;v={version};"
                                "as=APIGroupDiscoveryList"})

    # ------------------------------------------------------------------ hooks
    async def streaming(self, request: web.Request, res: ResourceInfo, namespace: str,
                        name: str, info: RequestInfo) -> web.StreamResponse:
        """pods/log, pods/exec|attach|portforward, nodes/proxy: to the kubelet."""
        from kubenode.server.apiserver.proxy import KubeletProxy
        if self._kubelet_proxy is None:
            self._kubelet_proxy = KubeletProxy(self)
        return await self._kubelet_proxy.handle(request, res, namespace, name, info)

    def metrics_api(self) -> metricsapi.MetricsAPI:
        """metrics.k8s.io (kubectl top), scraped from the kubelets."""
        from kubenode.server.apiserver.proxy import KubeletProxy
        if self._kubelet_proxy is None:
            self._kubelet_proxy = KubeletProxy(self)
        if self._metrics_api is None:
            self._metrics_api = metricsapi.MetricsAPI(server=self, kubelets=self._kubelet_proxy,
                                                      clock=self.clock)
        return self._metrics_api

    async def apply(self, request: web.Request, res: ResourceInfo, store: Store,
                    namespace: str, name: str, patch: Any, *, dry_run: bool,
                    subresource: str) -> web.Response:
        from kubenode.server.apiserver import apply as ssa
        return await ssa.apply(self, request, res, store, namespace, name, patch,
                               dry_run=dry_run, subresource=subresource)


def _aggregated_version(accept: str) -> str:
    """The first aggregated-discovery version the client accepts that we serve, or ''."""
    for part in accept.split(","):
        params = dict(p.strip().split("=", 1) for p in part.split(";")[1:] if "=" in p)
        if params.get("as") == "APIGroupDiscoveryList" and \
                params.get("g") == "apidiscovery.k8s.io" and params.get("v") in ("v2",
                                                                                 "v2beta1"):
            return params["v"]
        if part.split(";")[0].strip() in ("application/json", "*/*"):
            return ""
    return ""


def _not_found() -> errors.StatusError:
    return errors.StatusError(code=404, reason="NotFound",
                              message="the server could not find the requested resource")
