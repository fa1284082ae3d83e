"""CRI log reading (kubelet/logs.py) on CRI log files written by the test."""

from __future__ import annotations

import asyncio
import gzip
import os
import random
from pathlib import Path

import pytest

from kubenode.kubelet.logs import LogOptions, parse_cri_line, parse_timestamp, read_logs
from kubenode.kubelet.server.logs_dir import PodLogsDirLocator
from kubenode.kubelet.server.providers import BadRequest, NotFound

T0 = 1763930000  # 2025-11-23T20:33:20Z


def ts(i: int) -> str:
    return f"2025-11-23T20:33:{20 + i:02d}.{i:09d}Z"


def rec(i: int, text: str, *, stream: str = "stdout", tag: str = "F") -> str:
    return f"{ts(i)} {stream} {tag} {text}\n"


def append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


async def collect(path: Path, opts: LogOptions, **kw: object) -> bytes:
    out = bytearray()

    async def write(b: bytes) -> None:
        out.extend(b)

    await read_logs(path, opts, write, **kw)  # type: ignore[arg-type]
    return bytes(out)


def test_parse_line_and_timestamp() -> None:
    r = parse_cri_line(b"2016-10-06T00:17:09.669794202Z stderr P half a line")
    assert (r.stream, r.partial, r.content) == (b"stderr", True, b"half a line")
    assert parse_timestamp(b"2016-10-06T00:17:09.669794202Z") == pytest.approx(
        1475713029.669794202)
    assert parse_timestamp(b"2016-10-06T02:17:09.5+02:00") == pytest.approx(1475713029.5)
    assert parse_cri_line(b"2016-10-06T00:17:09Z stdout F").content == b""
    junk = parse_cri_line(b"not a cri line")
    assert junk.content == b"not a cri line" and junk.time is None


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    p = tmp_path / "0.log"
    p.write_text(rec(0, "one") + rec(1, "two", stream="stderr") + rec(2, "thr", tag="P")
                 + rec(3, "ee") + rec(4, "four") + rec(5, "five", stream="stderr"))
    return p


async def test_options(log_file: Path) -> None:
    assert await collect(log_file, LogOptions()) == b"one\ntwo\nthree\nfour\nfive\n"
    assert await collect(log_file, LogOptions(tail_lines=2)) == b"four\nfive\n"
    assert await collect(log_file, LogOptions(tail_lines=0)) == b""
    # partial records joined; the line carries its first record's timestamp
    assert await collect(log_file, LogOptions(timestamps=True, tail_lines=3)) == (
        f"{ts(2)} three\n{ts(4)} four\n{ts(5)} five\n".encode())
    assert await collect(log_file, LogOptions(since_time=T0 + 3.5)) == b"four\nfive\n"
    assert await collect(log_file, LogOptions(since_time=T0 + 2)) == b"three\nfour\nfive\n"
    assert await collect(log_file, LogOptions(limit_bytes=10)) == b"one\ntwo\nth"
    assert await collect(log_file, LogOptions(stream="stderr")) == b"two\nfive\n"
    assert await collect(log_file, LogOptions(tail_lines=1, limit_bytes=2)) == b"fi"


async def test_rotated_files_plain_and_gz(tmp_path: Path) -> None:
    p = tmp_path / "0.log"
    with gzip.open(tmp_path / "0.log.20251123-203300.gz", "wt") as f:
        f.write(rec(0, "oldest") + rec(1, "old-part", tag="P"))
    (tmp_path / "0.log.20251123-203310").write_text(rec(2, "-joined") + rec(3, "newer"))
    p.write_text(rec(4, "current"))
    assert await collect(p, LogOptions()) == b"oldest\nold-part-joined\nnewer\ncurrent\n"
    assert await collect(p, LogOptions(tail_lines=2)) == b"newer\ncurrent\n"


async def test_follow_survives_rotation(tmp_path: Path) -> None:
    p = tmp_path / "0.log"
    p.write_text(rec(0, "before"))
    running = True

    async def still_running() -> bool:
        return running

    out = bytearray()
    got_line = asyncio.Event()

    async def write(b: bytes) -> None:
        out.extend(b)
        got_line.set()

    task = asyncio.create_task(read_logs(p, LogOptions(follow=True), write,
                                         still_running=still_running, poll_interval=0.02))
    await asyncio.wait_for(got_line.wait(), 5)
    append(p, rec(1, "appended") + f"{ts(2)} stdout F half-writ")  # writer is mid-line
    await asyncio.sleep(0.1)
    append(p, "ten\n" + rec(3, "last-in-old"))
    os.rename(p, tmp_path / "0.log.20251123-203400")  # rotation: rename + new file
    p.write_text(rec(4, "after-rotation") + rec(5, "part-a", tag="P"))
    await asyncio.sleep(0.2)
    append(p, rec(6, "+b"))
    for _ in range(100):
        if out.endswith(b"part-a+b\n"):
            break
        await asyncio.sleep(0.02)
    running = False
    await asyncio.wait_for(task, 5)
    assert bytes(out) == (b"before\nappended\nhalf-written\nlast-in-old\nafter-rotation\n"
                          b"part-a+b\n")


async def test_follow_ends_at_limit_bytes(tmp_path: Path) -> None:
    p = tmp_path / "0.log"
    p.write_text(rec(0, "abc"))

    async def forever() -> bool:
        return True

    async def append_later() -> None:
        await asyncio.sleep(0.1)
        append(p, rec(1, "defgh"))

    writer = asyncio.create_task(append_later())
    out = await asyncio.wait_for(collect(p, LogOptions(follow=True, limit_bytes=6),
                                         still_running=forever, poll_interval=0.02), 5)
    await writer
    assert out == b"abc\nde"


async def test_pod_logs_dir_locator(tmp_path: Path) -> None:
    cdir = tmp_path / "ns1_web_uid-1" / "app"
    cdir.mkdir(parents=True)
    (cdir / "0.log").write_text(rec(0, "first run"))
    loc = PodLogsDirLocator(tmp_path)
    ref = await loc.container_log(namespace="ns1", pod="web", container="app", previous=False)
    assert ref.path == str(cdir / "0.log")
    with pytest.raises(BadRequest, match='previous terminated container "app" in pod "web"'):
        await loc.container_log(namespace="ns1", pod="web", container="app", previous=True)
    (cdir / "1.log").write_text(rec(1, "second run"))
    ref = await loc.container_log(namespace="ns1", pod="web", container="app", previous=True)
    assert await collect(Path(ref.path), LogOptions()) == b"first run\n"
    with pytest.raises(NotFound, match='pod "nope" does not exist'):
        await loc.container_log(namespace="ns1", pod="nope", container="app", previous=False)
    with pytest.raises(NotFound, match='container "db" not found in pod "web"'):
        await loc.container_log(namespace="ns1", pod="web", container="db", previous=False)


async def test_previous_and_current_across_rotated_files(tmp_path: Path) -> None:
    """After a restart, --previous reads the earlier run's rotated (gzipped) files too, and
    the rotated files of either run never count as a run of their own."""
    cdir = tmp_path / "ns1_web_uid-1" / "app"
    cdir.mkdir(parents=True)
    with gzip.open(cdir / "0.log.20251123-203300.gz", "wt") as f:
        f.write(rec(0, "run0-a"))
    (cdir / "0.log.20251123-203310").write_text(rec(1, "run0-b"))
    (cdir / "0.log").write_text(rec(2, "run0-c"))
    with gzip.open(cdir / "1.log.20251123-203400.gz", "wt") as f:
        f.write(rec(3, "run1-a"))
    (cdir / "1.log").write_text(rec(4, "run1-b"))
    loc = PodLogsDirLocator(tmp_path)
    prev = await loc.container_log(namespace="ns1", pod="web", container="app", previous=True)
    assert prev.path == str(cdir / "0.log")
    assert await collect(Path(prev.path), LogOptions()) == b"run0-a\nrun0-b\nrun0-c\n"
    assert await collect(Path(prev.path), LogOptions(tail_lines=2)) == b"run0-b\nrun0-c\n"
    cur = await loc.container_log(namespace="ns1", pod="web", container="app", previous=False)
    assert cur.path == str(cdir / "1.log")
    assert await collect(Path(cur.path), LogOptions()) == b"run1-a\nrun1-b\n"
    # mid-rotation: 1.log moved away, not reopened yet; its run is still the current one
    (cdir / "1.log").rename(cdir / "1.log.20251123-203410")
    cur = await loc.container_log(namespace="ns1", pod="web", container="app", previous=False)
    assert cur.path == str(cdir / "1.log")
    assert await collect(Path(cur.path), LogOptions()) == b"run1-a\nrun1-b\n"


async def test_tail_from_the_end_matches_a_full_read(tmp_path: Path) -> None:
    """tailLines reads blocks backwards; it must give the same lines as a full read,
    also when partial records straddle the block where it starts."""
    rng = random.Random(7)
    p = tmp_path / "0.log"
    recs = []
    for i in range(6000):
        tag = "P" if rng.random() < 0.3 else "F"
        stream = "stderr" if rng.random() < 0.2 else "stdout"
        recs.append(f"{ts(i % 30)} {stream} {tag} r{i}-" + "y" * rng.randrange(0, 300) + "\n")
    recs.append(rec(0, "end") + rec(0, "end", stream="stderr"))
    p.write_text("".join(recs))
    full = (await collect(p, LogOptions(timestamps=True))).splitlines(keepends=True)
    for n in (0, 1, 7, 100, 1500, len(full) - 1, len(full), len(full) + 10):
        got = await collect(p, LogOptions(tail_lines=n, timestamps=True))
        assert got == b"".join(full[-n:] if n else []), n


async def test_since_with_offset_and_short_timestamps(tmp_path: Path) -> None:
    p = tmp_path / "0.log"
    p.write_text("2025-11-23T22:33:20.5+02:00 stdout F a\n"   # T0 + 0.5
                 "2025-11-23T20:33:21Z stdout F b\n"          # T0 + 1
                 "2025-11-23T20:33:22.000000001Z stdout F c\n")
    assert await collect(p, LogOptions(since_time=T0 + 0.25)) == b"a\nb\nc\n"
    assert await collect(p, LogOptions(since_time=T0 + 0.75)) == b"b\nc\n"
    assert await collect(p, LogOptions(since_time=T0 + 1.5)) == b"c\n"
    assert await collect(p, LogOptions(timestamps=True, tail_lines=3)) == (
        b"2025-11-23T22:33:20.500000000+02:00 a\n2025-11-23T20:33:21.000000000Z b\n"
        b"2025-11-23T20:33:22.000000001Z c\n")
