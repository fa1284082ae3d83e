"""The shape every control loop here shares (upstream pkg/controller): informer event
handlers enqueue keys into a rate-limited WorkQueue; `workers` tasks pop a key and call
`sync(key)`; an exception requeues the key with backoff, success forgets it.

`run(stop)` waits for the informers' initial lists, runs the workers until `stop` is
set, then shuts the queue down and returns.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from kubenode.server.controllers.api import Api, ApiError, Informer, Informers, Resource
from kubenode.server.controllers.events import EventRecorder
from kubenode.server.controllers.podutil import key_of
from kubenode.server.controllers.workqueue import WorkQueue

Obj = dict[str, Any]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Controller:
    name = "controller"
    workers = 2

    def __init__(
        self, *, api: Api, informers: Informers, now: Callable[[], dt.datetime] = utcnow
    ) -> None:
        self.api = api
        self.informers = informers
        self.now = now
        self.queue: WorkQueue[str] = WorkQueue()
        self.recorder = EventRecorder(api=api, component=self.name, now=now)
        self.log = logging.getLogger(f"kubenode.server.controllers.{self.name}")
        self._watched: list[Informer] = []

    def informer(self, res: Resource) -> Informer:
        inf = self.informers.get(res)
        if inf not in self._watched:
            self._watched.append(inf)
        return inf

    def watch(self, res: Resource, mapper: Callable[[Obj], list[str]] | None = None) -> Informer:
        """Enqueue mapper(obj) keys (default: the object's own key) on every event."""
        inf = self.informer(res)
        to_keys = mapper or (lambda o: [key_of(o)])

        def on_update(old: Obj, new: Obj) -> None:
            for k in {*to_keys(old), *to_keys(new)}:
                self.queue.add(k)

        inf.add_handlers(
            on_add=lambda o: self._enqueue(to_keys(o)),
            on_update=on_update,
            on_delete=lambda o: self._enqueue(to_keys(o)),
        )
        return inf

    def _enqueue(self, keys: list[str]) -> None:
        for k in keys:
            self.queue.add(k)

    async def sync(self, key: str) -> None:
        raise NotImplementedError

    async def started(self) -> None:
        """Hook run once after the informers have synced, before the workers."""

    async def run(self, stop: asyncio.Event) -> None:
        for inf in self._watched:
            await inf.wait_synced()
        await self.started()
        workers = [
            asyncio.create_task(self._worker(), name=f"{self.name}-worker-{i}")
            for i in range(self.workers)
        ]
        try:
            await stop.wait()
        finally:
            self.queue.shutdown()
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            if key is None:
                return
            try:
                await self.sync(key)
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                self.log.info("sync failed key=%s err=%s", key, err)
                self.queue.add_rate_limited(key)
            except Exception:
                self.log.exception("sync crashed key=%s", key)
                self.queue.add_rate_limited(key)
            else:
                self.queue.forget(key)
            finally:
                self.queue.done(key)
