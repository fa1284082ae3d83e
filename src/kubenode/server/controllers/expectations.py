"""Controller expectations (upstream pkg/controller ControllerExpectations): after a
controller creates or deletes N objects it waits until its informer has seen them
before counting again, so it never double-creates from a stale cache. Expectations
older than `ttl` seconds are considered satisfied."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Expect:
    add: int
    delete: int
    at: float


class Expectations:
    def __init__(self, *, clock: Callable[[], float], ttl: float = 300.0) -> None:
        self._clock = clock
        self._ttl = ttl
        self._by_key: dict[str, _Expect] = {}

    def satisfied(self, key: str) -> bool:
        e = self._by_key.get(key)
        if e is None:
            return True
        return (e.add <= 0 and e.delete <= 0) or self._clock() - e.at > self._ttl

    def expect(self, key: str, *, add: int = 0, delete: int = 0) -> None:
        self._by_key[key] = _Expect(add, delete, self._clock())

    def observed_add(self, key: str) -> None:
        e = self._by_key.get(key)
        if e is not None:
            e.add -= 1

    def observed_delete(self, key: str) -> None:
        e = self._by_key.get(key)
        if e is not None:
            e.delete -= 1

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)
