"""The revisioned storage (SQLite backend): revisions, CAS, watch replay, compaction."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kubenode.server.apiserver.storage.interface import (
    CompactedError,
    ConflictError,
    KeyExistsError,
)
from kubenode.server.apiserver.storage.sqlite import SQLiteStorage


async def test_revisions_cas_list_and_restart(tmp_path: Path) -> None:
    s = SQLiteStorage(path=tmp_path / "db")
    await s.start()
    a = await s.create("/r/a", b"1")
    b = await s.create("/r/b", b"2")
    assert b.mod_revision == a.mod_revision + 1
    with pytest.raises(KeyExistsError):
        await s.create("/r/a", b"x")
    a2 = await s.update("/r/a", b"3", revision=a.mod_revision)
    assert a2.create_revision == a.mod_revision and a2.mod_revision > b.mod_revision
    with pytest.raises(ConflictError):
        await s.update("/r/a", b"4", revision=a.mod_revision)
    # list at an older revision sees the old value
    old = await s.list("/r/", revision=b.mod_revision)
    assert [(kv.key, kv.value) for kv in old.items] == [("/r/a", b"1"), ("/r/b", b"2")]
    page = await s.list("/r/", limit=1)
    assert page.more and page.remaining == 1 and page.items[0].key == "/r/a"
    await s.delete("/r/b")
    last = await s.current_revision()
    await s.close()
    s2 = SQLiteStorage(path=tmp_path / "db")
    await s2.start()
    assert await s2.current_revision() == last
    c = await s2.create("/r/c", b"5")
    assert c.mod_revision == last + 1
    assert [kv.key for kv in (await s2.list("/r/")).items] == ["/r/a", "/r/c"]
    await s2.close()


async def test_watch_replays_history_then_live_and_compaction(tmp_path: Path) -> None:
    s = SQLiteStorage(path=tmp_path / "db")
    await s.start()
    await s.create("/first", b"0")
    start = await s.current_revision()
    k = await s.create("/w/x", b"1")
    await s.update("/w/x", b"2", revision=k.mod_revision)
    seen: list[tuple[str, bytes]] = []

    async def consume() -> None:
        async for ev in s.watch("/w/", revision=start):
            seen.append((ev.type, ev.kv.value))
            if ev.type == "DELETE":
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    await s.create("/other/y", b"ignored")
    await s.delete("/w/x")
    await asyncio.wait_for(task, 5)
    assert seen == [("PUT", b"1"), ("PUT", b"2"), ("DELETE", b"2")]
    # compaction drops superseded history; watching from before it is an error
    k2 = await s.create("/w/z", b"a")
    await s.update("/w/z", b"b", revision=k2.mod_revision)
    rev = await s.current_revision()
    await s.compact(rev)
    with pytest.raises(CompactedError):
        async for _ in s.watch("/w/", revision=start):
            pass
    assert (await s.get("/w/z")) is not None and (await s.get("/w/z")).value == b"b"
    await s.close()
