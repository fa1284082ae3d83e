"""Proxying to kubelets (upstream pkg/registry/core/pod/rest/log.go, subresources.go,
node/rest/proxy.go): pods/log, nodes/proxy, and pods/exec|attach|portforward with the
upgraded connection spliced to the kubelet (SPDY/3.1 or WebSocket, whichever the client
speaks).

The kubelet is found from the Node: `status.addresses` (InternalIP, then Hostname, then
ExternalIP) and `status.daemonEndpoints.kubeletEndpoint.Port` (10250). The API server
authenticates to it with its own client certificate (`pki/kubelet-client.crt`,
CN=kube-apiserver-kubelet-client, O=system:masters) and, as upstream by default, does not
verify the kubelet's serving certificate unless `--kubelet-certificate-authority` names a
CA bundle (then the certificate must chain to it and name the address dialed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING
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
            ca = self.server.config.kubelet_certificate_authority
            if ca is not None:
                ctx = ssl.create_default_context(cafile=str(ca))
            else:
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
            if request.rel_url.raw_query_string:
                url += "?" + request.rel_url.raw_query_string
            return await self._forward(request, request.method, url)
        if res.plural == "pods" and sub in ("exec", "attach", "portforward"):
            if "upgrade" not in request.headers.get("Connection", "").lower():
                raise errors.bad_request("Upgrade request required")
            container = request.query.get("container", "")
            if sub == "portforward":
                pod = await self.server.store("", "pods").get(namespace, name)
                node = (pod.get("spec") or {}).get("nodeName")
                if not node:
                    raise errors.bad_request(f"pod {name} does not have a host assigned")
                base = await self.kubelet_base(node)
                path = f"/portForward/{quote(namespace)}/{quote(name)}"
            else:
                base, container = await self._pod_target(namespace, name, container)
                verb = "exec" if sub == "exec" else "attach"
                path = f"/{verb}/{quote(namespace)}/{quote(name)}/{quote(container)}"
            if request.rel_url.raw_query_string:
                path += "?" + request.rel_url.raw_query_string
            return await self._upgrade(request, base, path)
        if sub == "proxy" and res.plural in ("pods", "services"):
            from kubenode.server.apiserver import serviceproxy
            return await serviceproxy.handle(self.server, self, request, res, namespace, name)
        raise errors.service_unavailable(f"{res.plural}/{sub} is not available on this server")

    async def forward(self, request: web.Request, method: str, url: str
                      ) -> web.StreamResponse:
        """Proxy one HTTP request to `url` and stream the answer back."""
        return await self._forward(request, method, url)

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

    async def _upgrade(self, request: web.Request, base: str, path: str
                       ) -> web.StreamResponse:
        """Splice an upgraded connection (SPDY/3.1 or WebSocket) between the client and
        the kubelet: the request goes out with its Upgrade headers, the kubelet's 101 comes
        back, then bytes flow both ways until either side closes."""
        hostport = base.removeprefix("https://")
        host, _, port = hostport.rpartition(":")
        host = host.strip("[]")
        try:
            reader, writer = await asyncio.open_connection(host, int(port),
                                                           ssl=self.ssl_context())
        except OSError as err:
            raise errors.StatusError(code=502, reason="InternalError",
                                     message=f"error dialing backend: {err}") from err
        try:
            lines = [f"{request.method} {path} HTTP/1.1", f"Host: {hostport}"]
            for k, v in request.headers.items():
                if k.lower() in ("host", "authorization", "content-length",
                                 "transfer-encoding"):
                    continue
                lines.append(f"{k}: {v}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            parts = status_line.split(" ", 2)
            status = int(parts[1]) if len(parts) > 1 else 502
            headers = [(h.split(":", 1)[0].strip(), h.split(":", 1)[1].strip())
                       for h in header_lines if ":" in h]
            if status != 101:
                body = b""
                length = next((int(v) for k, v in headers if k.lower() == "content-length"),
                              None)
                with contextlib.suppress(asyncio.TimeoutError, asyncio.IncompleteReadError):
                    body = await asyncio.wait_for(
                        reader.readexactly(length) if length is not None else reader.read(),
                        timeout=10)
                resp = web.Response(status=status, body=body)
                for k, v in headers:
                    if k.lower() not in HOP_HEADERS:
                        resp.headers[k] = v
                return resp
            up_resp = web.StreamResponse(status=101, reason="Switching Protocols")
            for k, v in headers:
                up_resp.headers[k] = v
            up_resp._length_check = False  # an upgraded stream has no HTTP body framing
            feeder = _RawFeeder()
            protocol = request.protocol
            protocol.set_parser(feeder)  # type: ignore[arg-type]
            await up_resp.prepare(request)
            transport = request.transport
            assert transport is not None

            async def up() -> None:
                while True:
                    data = await feeder.queue.get()
                    if not data:
                        break
                    writer.write(data)
                    await writer.drain()
                with contextlib.suppress(OSError, RuntimeError):
                    if writer.can_write_eof():
                        writer.write_eof()

            async def down() -> None:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    transport.write(data)
                    if transport.is_closing():
                        break

            tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if tasks[1] not in done:
                with contextlib.suppress(asyncio.TimeoutError, Exception):
                    await asyncio.wait_for(tasks[1], timeout=5)
            for t in tasks:
                t.cancel()
            protocol.force_close()
            transport.close()
            return up_resp
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _RawFeeder:
    """Receives the client's bytes after the upgrade (aiohttp's payload parser seam)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.queue.put_nowait(bytes(data))
        return False, b""

    def feed_eof(self) -> None:
        self.queue.put_nowait(b"")
