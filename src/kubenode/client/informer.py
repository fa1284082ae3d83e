"""Informers: list + watch one resource into a local cache and tell handlers about
changes (upstream client-go reflector + store + shared informer, in one small class).

State machine of `Informer.run()`:

    LIST (paged) -> replace the store, deliver adds/updates/deletes for the difference,
                    has_synced() becomes true after the first successful list
      -> WATCH from the list's resourceVersion (allowWatchBookmarks, timeoutSeconds
         randomized in [5, 10) minutes like upstream) -> apply events, track the
         resourceVersion (bookmarks too)
      -> stream ended by the server: WATCH again from the last resourceVersion
      -> 410 Gone / Expired (as a status or an ERROR event): LIST again at once
      -> any other failure (connection refused, 5xx, ...): back off (exponential,
         jittered, capped) and retry; a failed LIST retries the LIST

The store is keyed "namespace/name" (cluster-scoped: "name") as upstream's
MetaNamespaceKeyFunc. Handlers are plain callables (sync, or returning an awaitable
which is awaited); a handler that raises is logged and does not stop the informer.
An update is delivered only when resourceVersion changed (relists do not re-deliver
unchanged objects)."""

from __future__ import annotations

import asyncio
import builtins
import inspect
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from kubenode.client.api import ApiClient, Obj
from kubenode.client.errors import ApiError
from kubenode.client.resources import Resource, as_resource

log = logging.getLogger(__name__)


def object_key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    name = str(meta.get("name", ""))
    return f"{ns}/{name}" if ns else name


def _rv(obj: Obj) -> str | None:
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    return str(rv) if rv is not None else None


@dataclass(kw_only=True)
class ResourceEventHandler:
    """Callbacks (upstream cache.ResourceEventHandlerFuncs)."""

    on_add: Callable[[Obj], Any] | None = None
    on_update: Callable[[Obj, Obj], Any] | None = None
    on_delete: Callable[[Obj], Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    initial: float = 0.8
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2


class Informer:
    """A list+watch cache of one resource, optionally filtered by namespace/selectors."""

    def __init__(self, client: ApiClient, resource: Resource | str, *,
                 namespace: str | None = None,
                 label_selector: str | Mapping[str, str] | None = None,
                 field_selector: str | Mapping[str, str] | None = None,
                 backoff: Backoff | None = None, page_size: int = 500,
                 watch_timeout: tuple[int, int] = (300, 600),
                 rng: random.Random | None = None) -> None:
        self.client = client
        self.resource = as_resource(resource)
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self._backoff = backoff or Backoff()
        self._page_size = page_size
        self._watch_timeout = watch_timeout
        self._rng = rng or random.Random()
        self._store: dict[str, Obj] = {}
        self._handlers: list[ResourceEventHandler] = []
        self._synced = asyncio.Event()
        self.resource_version: str | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self.lists = 0  # how many LISTs were done (observable relists)

    # -- cache access -----------------------------------------------------------

    def add_event_handler(self, handler: ResourceEventHandler) -> None:
        """Add a handler; it receives adds for what is already cached."""
        self._handlers.append(handler)
        if handler.on_add is not None:
            for obj in list(self._store.values()):
                self._call_soon(handler.on_add, obj)

    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_for_sync(self) -> None:
        """Return once the first LIST is in the store (wrap in asyncio.timeout)."""
        await self._synced.wait()

    def get(self, key: str) -> Obj | None:
        return self._store.get(key)

    def get_by_name(self, name: str, namespace: str | None = None) -> Obj | None:
        return self._store.get(f"{namespace}/{name}" if namespace else name)

    def items(self) -> builtins.list[Obj]:
        """All cached objects (upstream: store.List())."""
        return builtins.list(self._store.values())

    def list(self) -> builtins.list[Obj]:
        return self.items()

    def keys(self) -> builtins.list[str]:
        return builtins.list(self._store)

    # -- loop -------------------------------------------------------------------

    async def run(self) -> None:
        """List and watch until cancelled."""
        delay = self._backoff.initial
        need_list = True
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                    delay = self._backoff.initial
                await self._watch()
                delay = self._backoff.initial
            except ApiError as err:
                if err.gone:
                    log.info("watch expired, relisting resource=%s rv=%s",
                             self.resource.plural, self.resource_version)
                    need_list = True
                    continue
                log.warning("list/watch failed resource=%s err=%s", self.resource.plural, err)
                delay = await self._sleep(delay)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as err:
                log.warning("list/watch failed resource=%s err=%r", self.resource.plural, err)
                delay = await self._sleep(delay)

    async def _sleep(self, delay: float) -> float:
        b = self._backoff
        await asyncio.sleep(delay * (1 + b.jitter * self._rng.random()))
        return min(delay * b.factor, b.maximum)

    async def _relist(self) -> None:
        result = await self.client.list_all(
            self.resource, namespace=self.namespace, label_selector=self.label_selector,
            field_selector=self.field_selector, page_size=self._page_size)
        self.lists += 1
        fresh = {object_key(o): o for o in result.get("items") or []}
        old = self._store
        self._store = fresh
        self.resource_version = (result.get("metadata") or {}).get("resourceVersion")
        for key, obj in fresh.items():
            prev = old.get(key)
            if prev is None:
                await self._dispatch("add", obj)
            elif _rv(prev) != _rv(obj):
                await self._dispatch("update", prev, obj)
        for key, prev in old.items():
            if key not in fresh:
                await self._dispatch("delete", prev)
        self._synced.set()

    async def _watch(self) -> None:
        lo, hi = self._watch_timeout
        timeout = self._rng.randrange(lo, hi) if hi > lo else lo
        async for ev in self.client.watch(
            self.resource, namespace=self.namespace, label_selector=self.label_selector,
            field_selector=self.field_selector, resource_version=self.resource_version,
            timeout_seconds=timeout, allow_watch_bookmarks=True,
        ):
            rv = _rv(ev.object)
            if ev.type == "BOOKMARK":
                if rv:
                    self.resource_version = rv
                continue
            key = object_key(ev.object)
            if ev.type in ("ADDED", "MODIFIED"):
                prev = self._store.get(key)
                self._store[key] = ev.object
                if prev is None:
                    await self._dispatch("add", ev.object)
                else:
                    await self._dispatch("update", prev, ev.object)
            elif ev.type == "DELETED":
                prev = self._store.pop(key, None)
                await self._dispatch("delete", ev.object)
            if rv:
                self.resource_version = rv

    async def _dispatch(self, kind: str, *objs: Obj) -> None:
        for h in self._handlers:
            fn: Callable[..., Any] | None = getattr(h, f"on_{kind}")
            if fn is None:
                continue
            try:
                result = fn(*objs)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("event handler failed resource=%s event=%s",
                              self.resource.plural, kind)

    def _call_soon(self, fn: Callable[..., Any], *objs: Obj) -> None:
        try:
            result = fn(*objs)
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except Exception:
            log.exception("event handler failed resource=%s event=add", self.resource.plural)
