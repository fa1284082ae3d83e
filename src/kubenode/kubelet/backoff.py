"""Per-key exponential backoff (upstream client-go util/flowcontrol.Backoff), used for
CrashLoopBackOff (10s doubling to 300s) and image pulls. The clock is injected."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(kw_only=True)
class _Entry:
    backoff: float
    last_update: float


@dataclass(kw_only=True)
class Backoff:
    initial: float
    maximum: float
    now: Callable[[], float]
    _entries: dict[str, _Entry] = field(default_factory=dict)

    def get(self, key: str) -> float:
        e = self._entries.get(key)
        return e.backoff if e else 0.0

    def next(self, key: str, event_time: float) -> None:
        e = self._entries.get(key)
        if e is None or self._expired(event_time, e.last_update):
            self._entries[key] = _Entry(backoff=self.initial, last_update=event_time)
            return
        e.backoff = min(e.backoff * 2, self.maximum)
        e.last_update = event_time

    def is_in_backoff_since(self, key: str, event_time: float) -> bool:
        e = self._entries.get(key)
        if e is None or self._expired(event_time, e.last_update):
            return False
        return self.now() - event_time < e.backoff

    def reset(self, key: str) -> None:
        self._entries.pop(key, None)

    def gc(self) -> None:
        now = self.now()
        for k in [k for k, e in self._entries.items() if now - e.last_update > 2 * self.maximum]:
            del self._entries[k]

    def _expired(self, event_time: float, last_update: float) -> bool:
        return event_time - last_update > 2 * self.maximum
