"""SQLite storage, kine-shaped: one table, autoincrement id = revision.

Each write appends a row (name, created, deleted, create_revision, prev_revision, value);
the newest row of a name is its current state; a deletion row keeps the last value.
Compaction removes rows superseded at or before the compact revision. Writes are
serialized by one lock (one process owns the file); committed events go straight to the
broadcaster, and watchers replay history from the table before switching to live events.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

from kubenode.server.apiserver.storage.broadcaster import Broadcaster
from kubenode.server.apiserver.storage.interface import (
    CompactedError,
    ConflictError,
    Event,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    prefix_end,
)

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB
);
CREATE INDEX IF NOT EXISTS kine_name_id ON kine (name, id);
CREATE TABLE IF NOT EXISTS kine_meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
"""


@dataclass(kw_only=True)
class SQLiteStorage:
    path: Path
    broadcaster: Broadcaster = field(default_factory=Broadcaster)
    _db: aiosqlite.Connection | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _rev: int = 0
    _compacted: int = 0

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.executescript(_SCHEMA)
        await self._db.commit()
        async with self._db.execute(
                "SELECT seq FROM sqlite_sequence WHERE name='kine'") as cur:
            row = await cur.fetchone()
        self._rev = int(row[0]) if row else 0
        async with self._db.execute("SELECT v FROM kine_meta WHERE k='compact_rev'") as cur:
            row = await cur.fetchone()
        self._compacted = int(row[0]) if row else 0

    async def close(self) -> None:
        self.broadcaster.close_all()
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        assert self._db is not None, "storage not started"
        return self._db

    async def current_revision(self) -> int:
        return self._rev

    async def compacted_revision(self) -> int:
        return self._compacted

    async def _latest(self, key: str) -> tuple[Any, ...] | None:
        async with self.db.execute(
                "SELECT id, name, created, deleted, create_revision, prev_revision, value "
                "FROM kine WHERE name = ? ORDER BY id DESC LIMIT 1", (key,)) as cur:
            row = await cur.fetchone()
        return tuple(row) if row is not None else None

    async def get(self, key: str) -> KeyValue | None:
        row = await self._latest(key)
        if row is None or row[3]:
            return None
        return KeyValue(key=key, value=bytes(row[6]), create_revision=row[4],
                        mod_revision=row[0])

    async def list(self, prefix: str, *, revision: int = 0, start_after: str = "",
                   limit: int = 0) -> ListResult:
        rev = revision or self._rev
        if revision and revision < self._compacted:
            raise CompactedError(requested=revision, compacted=self._compacted)
        lo = start_after + "\x00" if start_after else prefix
        sql = ("SELECT kv.id, kv.name, kv.create_revision, kv.value FROM kine kv JOIN "
               "(SELECT MAX(id) AS id FROM kine WHERE name >= ? AND name < ? AND id <= ? "
               "GROUP BY name) m ON m.id = kv.id WHERE kv.deleted = 0 ORDER BY kv.name")
        params: list[Any] = [lo, prefix_end(prefix), rev]
        if limit:
            sql += " LIMIT ?"
            params.append(limit + 1)
        async with self.db.execute(sql, params) as cur:
            rows = await cur.fetchall()
        items = [KeyValue(key=r[1], value=bytes(r[3]), create_revision=r[2], mod_revision=r[0])
                 for r in rows]
        more = bool(limit) and len(items) > limit
        remaining = 0
        if more:
            items = items[:limit]
            async with self.db.execute(
                    "SELECT COUNT(*) FROM kine kv JOIN (SELECT MAX(id) AS id FROM kine "
                    "WHERE name > ? AND name < ? AND id <= ? GROUP BY name) m "
                    "ON m.id = kv.id WHERE kv.deleted = 0",
                    (items[-1].key, prefix_end(prefix), rev)) as cur:
                row = await cur.fetchone()
            remaining = int(row[0]) if row else 0
        return ListResult(items=items, revision=rev, more=more, remaining=remaining)

    async def _append(self, *, key: str, created: bool, deleted: bool, create_revision: int,
                      prev_revision: int, value: bytes) -> int:
        cur = await self.db.execute(
            "INSERT INTO kine (name, created, deleted, create_revision, prev_revision, value) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (key, int(created), int(deleted), create_revision, prev_revision, value))
        rev = cur.lastrowid
        await cur.close()
        assert rev is not None
        if created:
            await self.db.execute("UPDATE kine SET create_revision = ? WHERE id = ?", (rev, rev))
        await self.db.commit()
        self._rev = rev
        return rev

    async def create(self, key: str, value: bytes) -> KeyValue:
        async with self._lock:
            row = await self._latest(key)
            if row is not None and not row[3]:
                raise KeyExistsError(key)
            rev = await self._append(key=key, created=True, deleted=False, create_revision=0,
                                     prev_revision=row[0] if row else 0, value=value)
        kv = KeyValue(key=key, value=value, create_revision=rev, mod_revision=rev)
        self.broadcaster.publish(Event(type="PUT", kv=kv, revision=rev))
        return kv

    async def update(self, key: str, value: bytes, *, revision: int) -> KeyValue:
        async with self._lock:
            row = await self._latest(key)
            if row is None or row[3]:
                raise KeyNotFoundError(key)
            if revision and row[0] != revision:
                raise ConflictError(key)
            rev = await self._append(key=key, created=False, deleted=False,
                                     create_revision=row[4], prev_revision=row[0], value=value)
        kv = KeyValue(key=key, value=value, create_revision=row[4], mod_revision=rev)
        prev = KeyValue(key=key, value=bytes(row[6]), create_revision=row[4],
                        mod_revision=row[0])
        self.broadcaster.publish(Event(type="PUT", kv=kv, revision=rev, prev=prev))
        return kv

    async def delete(self, key: str, *, revision: int = 0) -> KeyValue:
        async with self._lock:
            row = await self._latest(key)
            if row is None or row[3]:
                raise KeyNotFoundError(key)
            if revision and row[0] != revision:
                raise ConflictError(key)
            last = bytes(row[6])
            rev = await self._append(key=key, created=False, deleted=True,
                                     create_revision=row[4], prev_revision=row[0], value=last)
        kv = KeyValue(key=key, value=last, create_revision=row[4], mod_revision=rev)
        prev = KeyValue(key=key, value=last, create_revision=row[4], mod_revision=row[0])
        self.broadcaster.publish(Event(type="DELETE", kv=kv, revision=rev, prev=prev))
        return kv

    async def _history(self, prefix: str, after: int) -> builtins.list[Event]:
        async with self.db.execute(
                "SELECT kv.id, kv.name, kv.deleted, kv.create_revision, kv.value, p.id, p.value "
                "FROM kine kv LEFT JOIN kine p ON p.id = kv.prev_revision AND p.deleted = 0 "
                "WHERE kv.id > ? AND kv.name >= ? AND kv.name < ? ORDER BY kv.id",
                (after, prefix, prefix_end(prefix))) as cur:
            rows = await cur.fetchall()
        out = []
        for r in rows:
            kv = KeyValue(key=r[1], value=bytes(r[4]), create_revision=r[3], mod_revision=r[0])
            prev = None
            if r[5] is not None:
                prev = KeyValue(key=r[1], value=bytes(r[6]), create_revision=r[3],
                                mod_revision=r[5])
            out.append(Event(type="DELETE" if r[2] else "PUT", kv=kv, revision=r[0],
                             prev=prev))
        return out

    async def watch(self, prefix: str, *, revision: int) -> AsyncIterator[Event]:
        if revision and revision < self._compacted:
            raise CompactedError(requested=revision, compacted=self._compacted)
        sub = self.broadcaster.subscribe(prefix)
        try:
            last = revision
            if revision < self._rev:
                for ev in await self._history(prefix, revision):
                    last = ev.revision
                    yield ev
            while True:
                item = await sub.queue.get()
                if item is None:
                    return
                if item.revision <= last:
                    continue
                last = item.revision
                yield item
        finally:
            self.broadcaster.unsubscribe(sub)

    async def compact(self, revision: int) -> None:
        async with self._lock:
            revision = min(revision, self._rev)
            if revision <= self._compacted:
                return
            await self.db.execute(
                "DELETE FROM kine WHERE id <= ? AND (deleted = 1 OR id < "
                "(SELECT MAX(k2.id) FROM kine k2 WHERE k2.name = kine.name AND k2.id <= ?))",
                (revision, revision))
            await self.db.execute(
                "INSERT INTO kine_meta (k, v) VALUES ('compact_rev', ?) "
                "ON CONFLICT(k) DO UPDATE SET v = excluded.v", (revision,))
            await self.db.commit()
            self._compacted = revision
        log.info("compacted revision=%d", revision)
