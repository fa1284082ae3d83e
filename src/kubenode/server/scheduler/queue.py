"""The scheduling queue (upstream internal/queue.PriorityQueue), simplified.

- activeQ: pods ready to be tried, highest spec.priority first, then FIFO.
- backoff: a pod that failed waits initial_backoff * 2**(attempts-1) (capped at
  max_backoff) before it can be active again.
- unschedulable: pods that fit nowhere wait for a cluster event (`move_all()`: node
  added/changed, a bound pod deleted) or for `flush_after` seconds, then go back to
  activeQ once their backoff has passed.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable


class SchedulingQueue:
    def __init__(
        self,
        *,
        clock: Callable[[], float],
        initial_backoff: float = 1.0,
        max_backoff: float = 10.0,
        flush_after: float = 60.0,
    ) -> None:
        self.clock = clock
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.flush_after = flush_after
        self._heap: list[tuple[int, int, str]] = []
        self._active: set[str] = set()
        self._seq = itertools.count()
        self._attempts: dict[str, int] = {}
        self._last_failure: dict[str, float] = {}
        self._unschedulable: dict[str, float] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._priority: dict[str, int] = {}
        self._event = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._active)

    def pending(self) -> int:
        return len(self._active) + len(self._unschedulable) + len(self._timers)

    def add(self, key: str, priority: int = 0) -> None:
        """A new or changed pending pod: active now (its backoff still applies)."""
        self._priority[key] = priority
        self._unschedulable.pop(key, None)
        self._activate(key)

    def _activate(self, key: str) -> None:
        if self._closed or key in self._active:
            return
        wait = self._backoff_left(key)
        if wait > 0:
            self._schedule(key, wait)
            return
        t = self._timers.pop(key, None)
        if t is not None:
            t.cancel()
        self._active.add(key)
        heapq.heappush(self._heap, (-self._priority.get(key, 0), next(self._seq), key))
        self._event.set()

    def _schedule(self, key: str, delay: float) -> None:
        if key in self._timers:
            return
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        if key in self._priority and key not in self._unschedulable:
            self._activate(key)

    def _backoff_left(self, key: str) -> float:
        attempts = self._attempts.get(key, 0)
        if attempts == 0:
            return 0.0
        duration = min(self.initial_backoff * 2 ** (attempts - 1), self.max_backoff)
        return self._last_failure.get(key, 0.0) + duration - self.clock()

    async def pop(self) -> str | None:
        while True:
            while self._heap:
                _, _, key = heapq.heappop(self._heap)
                if key in self._active:
                    self._active.discard(key)
                    return key
            if self._closed:
                return None
            self._event.clear()
            await self._event.wait()

    def failed(self, key: str, *, unschedulable: bool) -> None:
        """The attempt failed: back off; wait for an event if nothing fit."""
        if key not in self._priority:
            return
        self._attempts[key] = self._attempts.get(key, 0) + 1
        self._last_failure[key] = self.clock()
        if unschedulable:
            self._unschedulable[key] = self.clock()
            loop = asyncio.get_running_loop()
            t = self._timers.pop(key, None)
            if t is not None:
                t.cancel()
            self._timers[key] = loop.call_later(self.flush_after, self._flush, key)
        else:
            self._schedule(key, max(self._backoff_left(key), 0.001))

    def _flush(self, key: str) -> None:
        self._timers.pop(key, None)
        if self._unschedulable.pop(key, None) is not None:
            self._activate(key)

    def is_unschedulable(self, key: str) -> bool:
        return key in self._unschedulable

    def move_all(self) -> None:
        """A cluster event that may make unschedulable pods fit."""
        for key in list(self._unschedulable):
            del self._unschedulable[key]
            t = self._timers.pop(key, None)
            if t is not None:
                t.cancel()
            self._activate(key)

    def done(self, key: str) -> None:
        """The pod is bound or gone: forget it."""
        self._priority.pop(key, None)
        self._attempts.pop(key, None)
        self._last_failure.pop(key, None)
        self._unschedulable.pop(key, None)
        self._active.discard(key)
        t = self._timers.pop(key, None)
        if t is not None:
            t.cancel()

    def close(self) -> None:
        self._closed = True
        for t in self._timers.values():
            t.cancel()
        self._timers.clear()
        self._event.set()
