"""Proxying to kubelets (upstream pkg/registry/core/pod/rest/log.go, subresources.go,
node/rest/proxy.go): pods/log, nodes/proxy, and pods/exec|attach|portforward over
WebSocket (`v4/v5.channel.k8s.io`, `portforward.k8s.io`: kubectl >= 1.30 for exec/attach,
>= 1.31 for port-forward).

The kubelet is found from the Node: `status.addresses` (InternalIP, then Hostname, then
ExternalIP) and `status.daemonEndpoints.kubeletEndpoint.Port` (10250). The API server
authenticates to it with its own client certificate (`pki/kubelet-client.crt`,
CN=kube-apiserver-kubelet-client, O=system:masters) and, as upstream by default, does not
verify the kubelet's serving certificate. SPDY upgrades (kubectl <= 1.29 exec, <= 1.30
port-forward) are not proxied: 503, and kubectl reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web

from kubenode.api import errors
from kubenode.server.apiserver.registry.resources import ResourceInfo
from kubenode.server.apiserver.requestinfo import RequestInfo

if TYPE_CHECKING:
    from kubenode.server.apiserver.server import APIServer

log = logging.getLogger(__name__)

LOG_PARAMS = ("follow", "previous", "timestamps", "sinceSeconds", "sinceTime", "tailLines",
              "limitBytes", "insecureSkipTLSVerifyBackend", "stream")
HOP_HEADERS = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailers", "transfer-encoding", "upgrade", "host", "authorization",
               "content-length"}


class KubeletProxy:
    def __init__(self, server: APIServer) -> None:
        self.server = server
        self._ssl: ssl.SSLContext | None = None

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            from kubenode.server.apiserver.pki import issue_client_files
            pki = self.server.pki
            cert, key = pki.dir / "kubelet-client.crt", pki.dir / "kubelet-client.key"
            if not cert.exists() or not key.exists():
                issue_client_files(pki, cn="kube-apiserver-kubelet-client",
                                   orgs=["system:masters"], cert_path=cert, key_path=key)
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.load_cert_chain(cert, key)
            self._ssl = ctx
        return self._ssl

    async def kubelet_base(self, node_name: str) -> str:
        node = await self.server.store("", "nodes").get("", node_name)
        status = node.get("status") or {}
        addrs = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
        host = addrs.get("InternalIP") or addrs.get("Hostname") or addrs.get("ExternalIP")
        if not host:
            raise errors.service_unavailable(f"no preferred addresses found; known addresses: "
                                             f"{list(addrs.values())}")
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get(
            "Port") or 10250
        if ":" in host:
            host = f"[{host}]"
        return f"https://{host}:{port}"

    async def _pod_target(self, namespace: str, name: str, container: str) -> tuple[str, str]:
        pod = await self.server.store("", "pods").get(namespace, name)
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            raise errors.bad_request(f"pod {name} does not have a host assigned")
        if not container:
            names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
            if len(names) != 1:
                default = ((pod.get("metadata") or {}).get("annotations") or {}).get(
                    "kubectl.kubernetes.io/default-container")
                if default in names:
                    container = str(default)
                else:
                    raise errors.bad_request(
                        f"a container name must be specified for pod {name}, choose one of: "
                        f"[{' '.join(str(n) for n in names)}]")
            else:
                container = str(names[0])
        else:
            all_names = [c.get("name") for key in ("containers", "initContainers",
                                                   "ephemeralContainers")
                         for c in (pod.get("spec") or {}).get(key) or []]
            if container not in all_names:
                raise errors.bad_request(f"container {container} is not valid for pod {name}")
        return await self.kubelet_base(node), container

    async def handle(self, request: web.Request, res: ResourceInfo, namespace: str,
                     name: str, info: RequestInfo) -> web.StreamResponse:
        sub = info.subresource
        if res.plural == "pods" and sub == "log":
            base, container = await self._pod_target(namespace, name,
                                                     request.query.get("container", ""))
            q = {k: v for k, v in request.query.items() if k in LOG_PARAMS}
            url = f"{base}/containerLogs/{quote(namespace)}/{quote(name)}/{quote(container)}"
            if q:
                url += "?" + urlencode(q)
            return await self._forward(request, "GET", url)
        if res.plural == "nodes" and sub == "proxy":
            base = await self.kubelet_base(name)
            url = f"{base}/{info.subpath}"
            if request.query_string:
                url += "?" + request.query_string
            return await self._forward(request, request.method, url)
        if res.plural == "pods" and sub in ("exec", "attach", "portforward"):
            if request.headers.get("Upgrade", "").lower() != "websocket":
                raise errors.service_unavailable(
                    f"pods/{sub} over SPDY is not supported by this server; use a kubectl "
                    "that speaks WebSocket (>= 1.30 for exec/attach, >= 1.31 for "
                    "port-forward)")
            container = request.query.get("container", "")
            if sub == "portforward":
                pod = await self.server.store("", "pods").get(namespace, name)
                node = (pod.get("spec") or {}).get("nodeName")
                if not node:
                    raise errors.bad_request(f"pod {name} does not have a host assigned")
                base = await self.kubelet_base(node)
                url = f"{base}/portForward/{quote(namespace)}/{quote(name)}"
            else:
                base, container = await self._pod_target(namespace, name, container)
                path = "exec" if sub == "exec" else "attach"
                url = f"{base}/{path}/{quote(namespace)}/{quote(name)}/{quote(container)}"
            if request.query_string:
                url += "?" + request.query_string
            return await self._websocket(request, url)
        raise errors.service_unavailable(f"{res.plural}/{sub} is not available on this server")

    async def _forward(self, request: web.Request, method: str, url: str
                       ) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        body = await request.read() if request.can_read_body else None
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        session = aiohttp.ClientSession(timeout=timeout)
        try:
            try:
                upstream = await session.request(method, url, headers=headers, data=body,
                                                 ssl=self.ssl_context())
            except (aiohttp.ClientError, OSError) as err:
                raise errors.StatusError(
                    code=502, reason="InternalError",
                    message=f"error trying to reach service: {err}") from err
            async with upstream:
                resp = web.StreamResponse(status=upstream.status)
                for k, v in upstream.headers.items():
                    if k.lower() not in HOP_HEADERS:
                        resp.headers[k] = v
                await resp.prepare(request)
                with contextlib.suppress(ConnectionResetError, aiohttp.ClientPayloadError):
                    async for chunk in upstream.content.iter_any():
                        await resp.write(chunk)
                with contextlib.suppress(ConnectionResetError):
                    await resp.write_eof()
                return resp
        finally:
            await session.close()

    async def _websocket(self, request: web.Request, url: str) -> web.StreamResponse:
        protocols = [p.strip() for p in
                     request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        session = aiohttp.ClientSession()
        try:
            try:
                upstream = await session.ws_connect(url.replace("https://", "wss://", 1),
                                                    protocols=protocols,
                                                    ssl=self.ssl_context(), max_msg_size=0)
            except (aiohttp.ClientError, OSError) as err:
                raise errors.StatusError(
                    code=502, reason="InternalError",
                    message=f"error dialing backend: {err}") from err
            chosen = upstream.protocol
            ws = web.WebSocketResponse(protocols=[chosen] if chosen else (), max_msg_size=0,
                                       autoping=True)
            await ws.prepare(request)

            async def pump(src: Any, dst: Any) -> None:
                async for msg in src:
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        await dst.send_bytes(msg.data)
                    elif msg.type == aiohttp.WSMsgType.TEXT:
                        await dst.send_str(msg.data)
                    else:
                        break
                await dst.close()

            tasks = [asyncio.create_task(pump(ws, upstream)),
                     asyncio.create_task(pump(upstream, ws))]
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(t, timeout=2)
            for t in pending:
                t.cancel()
            await upstream.close()
            await ws.close()
            return ws
        finally:
            await session.close()
