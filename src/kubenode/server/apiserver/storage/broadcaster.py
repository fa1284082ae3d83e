"""Fan-out of committed storage events to watchers (kine's broadcaster).

`subscribe(prefix)` returns a `Subscription` whose queue receives every later event under
prefix. A watcher that falls `max_backlog` events behind is closed (its queue gets `None`)
rather than letting memory grow; the client re-watches from its last revision.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from kubenode.server.apiserver.storage.interface import Event


@dataclass(eq=False, kw_only=True)
class Subscription:
    prefix: str
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)
    closed: bool = False


@dataclass(kw_only=True)
class Broadcaster:
    max_backlog: int = 100_000
    _subs: set[Subscription] = field(default_factory=set)

    def subscribe(self, prefix: str) -> Subscription:
        sub = Subscription(prefix=prefix)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def publish(self, event: Event) -> None:
        for sub in list(self._subs):
            if not event.kv.key.startswith(sub.prefix):
                continue
            if sub.queue.qsize() >= self.max_backlog:
                sub.closed = True
                sub.queue.put_nowait(None)
                self._subs.discard(sub)
                continue
            sub.queue.put_nowait(event)

    def close_all(self) -> None:
        for sub in list(self._subs):
            sub.closed = True
            sub.queue.put_nowait(None)
        self._subs.clear()
