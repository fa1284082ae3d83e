"""`ApiClient`: an async client for the Kubernetes REST API (JSON), on aiohttp.

Verbs: get, list, create, update (PUT), patch (merge, json, strategic, apply), delete,
each on a `Resource` (or a built-in name such as "pods", "endpointslices") with an
optional namespace and subresource ("status", "binding", "eviction", ...). `watch()`
is an async iterator of `WatchEvent`s read from the chunked stream of JSON lines.

Failures raise `ApiError` carrying the server's Status object; a watch ERROR event
(e.g. 410 Expired when the resourceVersion is too old) also raises `ApiError`, so a
consumer relists on `err.gone`. Connection problems raise aiohttp.ClientError.

Lifecycle: `async with ApiClient(config) as client:` or `await client.close()`.
The aiohttp session is created lazily inside the running loop."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from kubenode.client.errors import ApiError, status_for
from kubenode.client.kubeconfig import ClientConfig, load_kubeconfig
from kubenode.client.resources import Resource, as_resource

log = logging.getLogger(__name__)

PatchType = Literal["merge", "json", "strategic", "apply"]
PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One watch event: type is ADDED, MODIFIED, DELETED or BOOKMARK."""

    type: str
    object: Obj


def _selector(sel: str | Mapping[str, str] | None) -> str | None:
    if sel is None or isinstance(sel, str):
        return sel
    return ",".join(f"{k}={v}" for k, v in sel.items())


async def _raise_for(resp: aiohttp.ClientResponse) -> None:
    if resp.status < 400:
        return
    text = await resp.text(errors="replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        body.setdefault("code", resp.status)
        raise ApiError(body)
    raise ApiError(status_for(resp.status, text.strip() or resp.reason or "request failed"))


class ApiClient:
    """One API server, one identity. Cheap to share across tasks in one loop."""

    def __init__(self, config: ClientConfig, *, timeout: float = 60.0) -> None:
        self.config = config
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._ssl = config.ssl_context()

    @classmethod
    def from_kubeconfig(cls, path: str, *, context: str | None = None) -> ApiClient:
        return cls(load_kubeconfig(path, context=context))

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def use_credentials(self, config: ClientConfig) -> None:
        """Switch identity (a rotated client certificate): later requests use `config`;
        open connections, watches included, are closed so that none keeps the old one
        (as upstream's rotation closes all connections; informers re-watch)."""
        self.config = config
        self._ssl = config.ssl_context()
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": self.config.user_agent}
        token = self.config.bearer_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            auth = None
            if self.config.username is not None and self.config.password is not None:
                auth = aiohttp.BasicAuth(self.config.username, self.config.password)
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else False,
                                             limit=100)
            self._session = aiohttp.ClientSession(connector=connector, auth=auth)
        return self._session

    async def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                      body: Any = None, content_type: str = "application/json",
                      request_timeout: float | None = None) -> Any:
        """One request; returns the decoded JSON body (None for an empty body)."""
        headers = self._headers()
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        q = {k: str(v).lower() if isinstance(v, bool) else str(v)
             for k, v in (params or {}).items() if v is not None}
        async with self._get_session().request(
            method, self.config.server + path, params=q, data=data, headers=headers,
            timeout=aiohttp.ClientTimeout(total=request_timeout or self._timeout),
            server_hostname=self.config.tls_server_name,
        ) as resp:
            await _raise_for(resp)
            raw = await resp.read()
        if not raw:
            return None
        return json.loads(raw)

    # -- verbs ----------------------------------------------------------------

    async def get(self, resource: Resource | str, name: str, *, namespace: str | None = None,
                  subresource: str | None = None) -> Obj:
        r = as_resource(resource)
        result: Obj = await self.request(
            "GET", r.path(namespace=namespace, name=name, subresource=subresource))
        return result

    async def list(self, resource: Resource | str, *, namespace: str | None = None,
                   label_selector: str | Mapping[str, str] | None = None,
                   field_selector: str | Mapping[str, str] | None = None,
                   resource_version: str | None = None, limit: int | None = None,
                   continue_: str | None = None) -> Obj:
        """One page of a list (use `list_all` to follow `continue` tokens)."""
        r = as_resource(resource)
        result: Obj = await self.request("GET", r.path(namespace=namespace), params={
            "labelSelector": _selector(label_selector),
            "fieldSelector": _selector(field_selector),
            "resourceVersion": resource_version, "limit": limit, "continue": continue_,
        })
        return result

    async def list_all(self, resource: Resource | str, *, namespace: str | None = None,
                       label_selector: str | Mapping[str, str] | None = None,
                       field_selector: str | Mapping[str, str] | None = None,
                       page_size: int = 500) -> Obj:
        """All pages merged into one list object (items + the last page's metadata)."""
        items: list[Obj] = []
        token: str | None = None
        while True:
            page = await self.list(resource, namespace=namespace, label_selector=label_selector,
                                   field_selector=field_selector, limit=page_size,
                                   continue_=token)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                page["items"] = items
                return page

    async def create(self, resource: Resource | str, body: Obj, *,
                     namespace: str | None = None, subresource: str | None = None,
                     name: str | None = None, field_manager: str | None = None) -> Obj:
        r = as_resource(resource)
        ns = namespace if namespace is not None else _ns_of(r, body)
        if subresource and name is None:
            name = (body.get("metadata") or {}).get("name")
        result: Obj = await self.request(
            "POST", r.path(namespace=ns, name=name if subresource else None,
                           subresource=subresource),
            body=body, params={"fieldManager": field_manager})
        return result

    async def update(self, resource: Resource | str, body: Obj, *,
                     namespace: str | None = None, subresource: str | None = None,
                     field_manager: str | None = None) -> Obj:
        """PUT the whole object (metadata.resourceVersion makes it a compare-and-swap)."""
        r = as_resource(resource)
        ns = namespace if namespace is not None else _ns_of(r, body)
        name = (body.get("metadata") or {}).get("name")
        if not name:
            raise ValueError("update needs metadata.name")
        result: Obj = await self.request(
            "PUT", r.path(namespace=ns, name=name, subresource=subresource), body=body,
            params={"fieldManager": field_manager})
        return result

    async def update_status(self, resource: Resource | str, body: Obj, *,
                            namespace: str | None = None) -> Obj:
        return await self.update(resource, body, namespace=namespace, subresource="status")

    async def patch(self, resource: Resource | str, name: str, patch: Any, *,
                    namespace: str | None = None, subresource: str | None = None,
                    patch_type: PatchType = "merge", field_manager: str | None = None,
                    force: bool | None = None) -> Obj:
        r = as_resource(resource)
        if patch_type == "apply" and field_manager is None:
            raise ValueError("server-side apply needs a field_manager")
        result: Obj = await self.request(
            "PATCH", r.path(namespace=namespace, name=name, subresource=subresource),
            body=patch, content_type=PATCH_CONTENT_TYPES[patch_type],
            params={"fieldManager": field_manager, "force": force})
        return result

    async def patch_status(self, resource: Resource | str, name: str, patch: Any, *,
                           namespace: str | None = None,
                           patch_type: PatchType = "merge") -> Obj:
        return await self.patch(resource, name, patch, namespace=namespace,
                                subresource="status", patch_type=patch_type)

    async def delete(self, resource: Resource | str, name: str, *,
                     namespace: str | None = None, grace_period_seconds: int | None = None,
                     propagation_policy: str | None = None,
                     preconditions: Obj | None = None) -> Obj:
        """DELETE; returns the object (graceful) or a Success Status."""
        r = as_resource(resource)
        options: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if propagation_policy is not None:
            options["propagationPolicy"] = propagation_policy
        if preconditions is not None:
            options["preconditions"] = preconditions
        result: Obj = await self.request(
            "DELETE", r.path(namespace=namespace, name=name), body=options)
        return result

    # -- watch ----------------------------------------------------------------

    async def watch(self, resource: Resource | str, *, namespace: str | None = None,
                    label_selector: str | Mapping[str, str] | None = None,
                    field_selector: str | Mapping[str, str] | None = None,
                    resource_version: str | None = None, timeout_seconds: int | None = None,
                    allow_watch_bookmarks: bool = True,
                    send_initial_events: bool | None = None) -> AsyncIterator[WatchEvent]:
        """Events until the server ends the stream (timeoutSeconds) or the caller stops.

        An ERROR event raises ApiError with its Status (410 Expired -> `err.gone`)."""
        r = as_resource(resource)
        params = {
            "watch": "true",
            "labelSelector": _selector(label_selector),
            "fieldSelector": _selector(field_selector),
            "resourceVersion": resource_version,
            "timeoutSeconds": timeout_seconds,
            "allowWatchBookmarks": allow_watch_bookmarks,
            "sendInitialEvents": send_initial_events,
        }
        q = {k: str(v).lower() if isinstance(v, bool) else str(v)
             for k, v in params.items() if v is not None}
        async with self._get_session().get(
            self.config.server + r.path(namespace=namespace), params=q,
            headers=self._headers(), server_hostname=self.config.tls_server_name,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._timeout,
                                          sock_read=(timeout_seconds or 1800) + 60),
        ) as resp:
            await _raise_for(resp)
            async for line in _lines(resp.content):
                yield decode_watch_event(line)


async def _lines(stream: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Newline-separated records of any length (aiohttp's readline caps line size)."""
    buf = b""
    async for chunk in stream.iter_any():
        buf += chunk
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                break
            line, buf = buf[:nl], buf[nl + 1:]
            if line.strip():
                yield line
    if buf.strip():
        yield buf


def decode_watch_event(line: bytes | str) -> WatchEvent:
    """One JSON line of a watch stream (metav1.WatchEvent)."""
    try:
        ev = json.loads(line)
    except ValueError as err:
        raise ApiError(status_for(500, f"malformed watch event: {err}")) from err
    if not isinstance(ev, dict) or "type" not in ev:
        raise ApiError(status_for(500, "malformed watch event: no type"))
    obj = ev.get("object") or {}
    if ev["type"] == "ERROR":
        if isinstance(obj, dict) and obj.get("kind") == "Status":
            raise ApiError(obj)
        raise ApiError(status_for(500, f"watch error: {obj!r}"))
    return WatchEvent(type=str(ev["type"]), object=obj)


def _ns_of(r: Resource, body: Obj) -> str | None:
    if not r.namespaced:
        return None
    return (body.get("metadata") or {}).get("namespace") or "default"
