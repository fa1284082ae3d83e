"""The seam's real side: `ClientApi` (the Api Protocol over kubenode.client.ApiClient)
and `SharedInformers` (one kubenode.client.Informer per resource, started on first use,
with a namespace index and kind/apiVersion filled in on cached objects).

Lifecycle: `async with SharedInformers(client) as informers:`; informers created
before or after entering run until the context exits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from kubenode.client import ApiClient, ResourceEventHandler
from kubenode.client import ApiError as ClientApiError
from kubenode.client import Informer as ClientInformer
from kubenode.client import Resource as ClientResource
from kubenode.server.controllers.api import ApiError, Resource

log = logging.getLogger(__name__)
Obj = dict[str, Any]


def _client_res(res: Resource) -> ClientResource:
    return ClientResource(
        plural=res.plural,
        kind=res.kind,
        version=res.version,
        group=res.group,
        namespaced=res.namespaced,
    )


def _convert(err: ClientApiError) -> ApiError:
    return ApiError(err.code, err.reason, err.message)


class ClientApi:
    """The Api Protocol over an ApiClient; failures become controllers.api.ApiError."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client

    async def get(self, res: Resource, name: str, *, namespace: str | None = None) -> Obj:
        try:
            obj = await self.client.get(_client_res(res), name, namespace=namespace)
        except ClientApiError as err:
            raise _convert(err) from err
        return obj

    async def list(
        self, res: Resource, *, namespace: str | None = None, label_selector: str | None = None
    ) -> list[Obj]:
        try:
            result = await self.client.list_all(
                _client_res(res), namespace=namespace, label_selector=label_selector
            )
        except ClientApiError as err:
            raise _convert(err) from err
        items: list[Obj] = result.get("items") or []
        return items

    async def create(
        self,
        res: Resource,
        obj: Obj,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        name: str | None = None,
    ) -> Obj:
        try:
            return await self.client.create(
                _client_res(res), obj, namespace=namespace, subresource=subresource, name=name
            )
        except ClientApiError as err:
            raise _convert(err) from err

    async def update(self, res: Resource, obj: Obj, *, subresource: str | None = None) -> Obj:
        try:
            return await self.client.update(
                _client_res(res),
                obj,
                subresource=subresource,
                namespace=obj["metadata"].get("namespace"),
            )
        except ClientApiError as err:
            raise _convert(err) from err

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: Obj,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> Obj:
        try:
            return await self.client.patch(
                _client_res(res),
                name,
                patch,
                namespace=namespace,
                subresource=subresource,
                patch_type="merge",
            )
        except ClientApiError as err:
            raise _convert(err) from err

    async def delete(
        self,
        res: Resource,
        name: str,
        *,
        namespace: str | None = None,
        propagation_policy: str | None = None,
        uid: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> None:
        try:
            await self.client.delete(
                _client_res(res),
                name,
                namespace=namespace,
                propagation_policy=propagation_policy,
                grace_period_seconds=grace_period_seconds,
                preconditions={"uid": uid} if uid else None,
            )
        except ClientApiError as err:
            raise _convert(err) from err

    async def raw(self, method: str, path: str, body: Obj | None = None) -> Obj:
        try:
            result: Obj = await self.client.request(method, path, body=body) or {}
        except ClientApiError as err:
            raise _convert(err) from err
        return result


class SharedInformer:
    """One resource's informer as the controllers' Informer Protocol."""

    def __init__(self, inner: ClientInformer, res: Resource) -> None:
        self.inner = inner
        self.res = res
        self.by_ns: dict[str, dict[str, Obj]] = {}
        inner.add_event_handler(
            ResourceEventHandler(
                on_add=self._index,
                on_update=lambda _old, new: self._index(new),
                on_delete=self._unindex,
            )
        )

    def _index(self, obj: Obj) -> None:
        obj.setdefault("kind", self.res.kind)
        obj.setdefault("apiVersion", self.res.api_version)
        md = obj.get("metadata") or {}
        self.by_ns.setdefault(md.get("namespace") or "", {})[md.get("name", "")] = obj

    def _unindex(self, obj: Obj) -> None:
        md = obj.get("metadata") or {}
        self.by_ns.get(md.get("namespace") or "", {}).pop(md.get("name", ""), None)

    def add_handlers(
        self,
        *,
        on_add: Callable[[Obj], None],
        on_update: Callable[[Obj, Obj], None],
        on_delete: Callable[[Obj], None],
    ) -> None:
        self.inner.add_event_handler(
            ResourceEventHandler(on_add=on_add, on_update=on_update, on_delete=on_delete)
        )

    def get(self, key: str) -> Obj | None:
        return self.inner.get(key)

    def list(self, namespace: str | None = None) -> list[Obj]:
        if namespace is None:
            return self.inner.list()
        return list(self.by_ns.get(namespace, {}).values())

    async def wait_synced(self) -> None:
        await self.inner.wait_for_sync()


class SharedInformers:
    """Informers shared by every loop of one process, one per resource."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self._informers: dict[Resource, SharedInformer] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False

    def get(self, res: Resource) -> SharedInformer:
        inf = self._informers.get(res)
        if inf is None:
            inf = SharedInformer(ClientInformer(self.client, _client_res(res)), res)
            self._informers[res] = inf
            if self._running:
                self._start(res, inf)
        return inf

    def _start(self, res: Resource, inf: SharedInformer) -> None:
        self._tasks.append(
            asyncio.create_task(self._supervise(res, inf), name=f"informer-{res.plural}")
        )

    async def _supervise(self, res: Resource, inf: SharedInformer) -> None:
        while True:
            try:
                await inf.inner.run()
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, Exception):
                log.exception("informer died resource=%s; restarting", res.plural)
                await asyncio.sleep(1.0)

    async def __aenter__(self) -> SharedInformers:
        self._running = True
        for res, inf in self._informers.items():
            self._start(res, inf)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._running = False
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
