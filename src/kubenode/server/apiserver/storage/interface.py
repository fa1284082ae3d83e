"""The storage seam: a revisioned key-value store with watch (etcd's model, as kine has it).

Every write gets the next global revision. `get`/`list` return `KeyValue`s carrying the
revision that last modified them (`mod_revision`, the objects' resourceVersion). `watch`
yields every event with `mod_revision > revision` under a prefix, in order, first from
history, then live; it raises `CompactedError` when `revision` is older than the last
compaction. `update`/`delete` with `revision` != 0 are compare-and-swap on `mod_revision`.
Backends: `sqlite.SQLiteStorage` (default) and `etcd.EtcdStorage`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol


class StorageError(Exception):
    pass


class KeyExistsError(StorageError):
    pass


class KeyNotFoundError(StorageError):
    pass


class ConflictError(StorageError):
    """Compare-and-swap failed: the key's current revision is not the expected one."""


class CompactedError(StorageError):
    def __init__(self, *, requested: int, compacted: int) -> None:
        super().__init__(f"required revision {requested} has been compacted "
                         f"(compacted revision {compacted})")
        self.requested = requested
        self.compacted = compacted


@dataclass(frozen=True, kw_only=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, kw_only=True)
class Event:
    type: Literal["PUT", "DELETE"]
    kv: KeyValue  # for DELETE: the last value, with mod_revision = the deletion's revision
    revision: int
    prev: KeyValue | None = None  # the value before this event, when known


@dataclass(frozen=True, kw_only=True)
class ListResult:
    items: list[KeyValue]
    revision: int
    more: bool = False
    remaining: int = 0


def prefix_end(prefix: str) -> str:
    """The smallest key greater than every key starting with prefix."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Storage(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def current_revision(self) -> int: ...

    async def compacted_revision(self) -> int: ...

    async def get(self, key: str) -> KeyValue | None: ...

    async def list(self, prefix: str, *, revision: int = 0, start_after: str = "",
                   limit: int = 0) -> ListResult: ...

    async def create(self, key: str, value: bytes) -> KeyValue: ...

    async def update(self, key: str, value: bytes, *, revision: int) -> KeyValue: ...

    async def delete(self, key: str, *, revision: int = 0) -> KeyValue: ...

    def watch(self, prefix: str, *, revision: int) -> AsyncIterator[Event]: ...

    async def compact(self, revision: int) -> None: ...
