"""Container log reading for /containerLogs (upstream pkg/kubelet/kuberuntime/logs).

Files are in CRI format, one record per line:
    <RFC3339Nano timestamp> <stdout|stderr> <P|F> <content>
P (partial) records are joined with the following records up to the next F record into
one line; the line carries the timestamp of its first record.

Contract: `await read_logs(path, options, write, ...)` writes the selected lines to
`write` (an async byte sink) and returns when done:
- rotated files beside `path` (`<path>.<suffix>`, `<path>.<suffix>.gz`, oldest first by
  name, as the container log manager names them) are read before `path`;
- `since_time` (unix seconds) keeps lines stamped at or after it (`sinceSeconds` is turned
  into `since_time` by the caller with its clock);
- `tail_lines` keeps the last N lines (after `since`, before `limit_bytes`);
- `timestamps` prefixes each line with its timestamp and a space;
- `stream` ("stdout"/"stderr") keeps one stream, None keeps both;
- `limit_bytes` stops after that many bytes (a line may be cut), also ending a follow;
- `follow` keeps polling `path` every `poll_interval` for new records after the initial
  read; a rotation (the path now names another inode: the file was renamed and a new one
  created) is handled by draining the old file, then reopening the path; truncation
  restarts from 0. The follow ends when `still_running()` says False and the file is
  drained, or when the writer raises (client gone) / the task is cancelled.
A malformed line is passed through as an stdout line with no timestamp (never an error).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import io
import os
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

Writer = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class LogOptions:
    follow: bool = False
    since_time: float | None = None
    timestamps: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    stream: str | None = None


@dataclass(frozen=True, kw_only=True)
class LogRecord:
    timestamp: bytes      # as written, e.g. b"2024-01-02T03:04:05.123456789Z"
    time: float | None    # unix seconds, None if unparseable
    stream: bytes
    partial: bool
    content: bytes        # without the trailing newline


def parse_timestamp(ts: bytes) -> float | None:
    """RFC3339Nano ("...T..:..:..[.fraction](Z|+hh:mm)") -> unix seconds (float)."""
    try:
        s = ts.decode()
        if s.endswith("Z"):
            s, offset = s[:-1], "+00:00"
        else:
            s, offset = s[:-6], s[-6:]
        base, _, frac = s.partition(".")
        t = dt.datetime.fromisoformat(base + offset).timestamp()
        if frac:
            t += int(frac) / (10 ** len(frac))
        return t
    except (ValueError, UnicodeDecodeError):
        return None


def format_timestamp(ts: bytes) -> bytes:
    """As upstream's RFC3339NanoFixed ("2006-01-02T15:04:05.000000000Z07:00"): nine
    fraction digits, a zero offset written "Z" (conmon writes "+00:00")."""
    if ts.endswith((b"+00:00", b"-00:00")):
        ts = ts[:-6] + b"Z"
    body, zone = (ts[:-1], b"Z") if ts.endswith(b"Z") else (ts[:-6], ts[-6:])
    base, _, frac = body.partition(b".")
    if len(base) != 19 or (frac and not frac.isdigit()):
        return ts
    return base + b"." + frac[:9].ljust(9, b"0") + zone


def parse_cri_line(line: bytes) -> LogRecord:
    """Parse one CRI log line (without its newline)."""
    parts = line.split(b" ", 3)
    if len(parts) >= 3 and parts[1] in (b"stdout", b"stderr") and parts[2] in (b"P", b"F"):
        return LogRecord(timestamp=parts[0], time=parse_timestamp(parts[0]), stream=parts[1],
                         partial=parts[2] == b"P", content=parts[3] if len(parts) == 4 else b"")
    if len(parts) >= 2 and parts[1] in (b"stdout", b"stderr"):  # older format, no tag
        rest = line.split(b" ", 2)
        return LogRecord(timestamp=parts[0], time=parse_timestamp(parts[0]), stream=parts[1],
                         partial=False, content=rest[2] if len(rest) == 3 else b"")
    return LogRecord(timestamp=b"", time=None, stream=b"stdout", partial=False, content=line)


@dataclass(frozen=True, kw_only=True)
class LogLine:
    timestamp: bytes
    time: float | None
    stream: bytes
    content: bytes   # with the trailing newline


class _Joiner:
    """Joins P records (per stream) with the following F record."""

    def __init__(self) -> None:
        self._pending: dict[bytes, tuple[LogRecord, list[bytes]]] = {}

    def feed(self, rec: LogRecord) -> LogLine | None:
        first, chunks = self._pending.get(rec.stream, (rec, []))
        chunks.append(rec.content)
        if rec.partial:
            self._pending[rec.stream] = (first, chunks)
            return None
        self._pending.pop(rec.stream, None)
        return LogLine(timestamp=first.timestamp, time=first.time, stream=first.stream,
                       content=b"".join(chunks) + b"\n")


def rotated_files(path: Path) -> list[Path]:
    """Older files of the same log, oldest first: <name>.<suffix>[.gz]."""
    try:
        names = [e.name for e in os.scandir(path.parent)
                 if e.name.startswith(path.name + ".") and not e.name.endswith(".tmp")]
    except FileNotFoundError:
        return []
    return [path.parent / n for n in sorted(names)]


def _open(path: Path) -> BinaryIO:
    if path.suffix == ".gz":
        return cast(BinaryIO, gzip.open(path, "rb"))
    return _open_plain(path)


def _open_plain(path: Path) -> BinaryIO:
    return open(path, "rb")


def _lines(f: BinaryIO) -> Iterator[bytes]:
    for raw in f:
        if raw.endswith(b"\n"):
            yield raw[:-1]
        else:
            yield raw  # last line of a finished file


class _Selector:
    """since/stream filtering, timestamps prefix, limit_bytes accounting."""

    def __init__(self, opts: LogOptions) -> None:
        self.opts = opts
        self.remaining = opts.limit_bytes
        self.stream = opts.stream.encode() if opts.stream else None

    def keep(self, line: LogLine) -> bool:
        if self.stream is not None and line.stream != self.stream:
            return False
        since = self.opts.since_time
        return not (since is not None and line.time is not None and line.time < since)

    def render(self, line: LogLine) -> bytes:
        data = line.content
        if self.opts.timestamps and line.timestamp:
            data = format_timestamp(line.timestamp) + b" " + data
        if self.remaining is not None:
            data = data[: self.remaining]
            self.remaining -= len(data)
        return data

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


def _initial_lines(path: Path, joiner: _Joiner, sel: _Selector,
                   current: BinaryIO | None) -> Iterable[LogLine]:
    for old in rotated_files(path):
        try:
            with _open(old) as f:
                for raw in _lines(f):
                    line = joiner.feed(parse_cri_line(raw))
                    if line is not None and sel.keep(line):
                        yield line
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
    if current is not None:
        for raw in _complete_lines(current):
            line = joiner.feed(parse_cri_line(raw))
            if line is not None and sel.keep(line):
                yield line


def _complete_lines(f: BinaryIO) -> Iterator[bytes]:
    """Complete lines from the current position; leaves the position after the last one."""
    while True:
        pos = f.tell()
        raw = f.readline()
        if not raw:
            return
        if not raw.endswith(b"\n"):
            f.seek(pos)  # a writer is mid-line: read it again later
            return
        yield raw[:-1]


async def read_logs(path: str | os.PathLike[str], opts: LogOptions, write: Writer, *,
                    still_running: Callable[[], Awaitable[bool]] | None = None,
                    poll_interval: float = 0.2) -> None:
    p = Path(path)
    sel = _Selector(opts)
    joiner = _Joiner()
    try:
        current: BinaryIO | None = _open_plain(p)
    except FileNotFoundError:
        current = None
        if not rotated_files(p):
            raise
    try:
        lines: Iterable[LogLine] = _initial_lines(p, joiner, sel, current)
        if opts.tail_lines is not None:
            lines = deque(lines, maxlen=max(opts.tail_lines, 0))
        out = io.BytesIO()
        for line in lines:
            out.write(sel.render(line))
            if sel.exhausted:
                break
            if out.tell() >= 64 << 10:
                await write(out.getvalue())
                out = io.BytesIO()
        if out.tell():
            await write(out.getvalue())
        if not opts.follow or sel.exhausted:
            return
        await _follow(p, current, joiner, sel, write, still_running, poll_interval)
    finally:
        if current is not None:
            current.close()


async def _follow(p: Path, current: BinaryIO | None, joiner: _Joiner, sel: _Selector,
                  write: Writer, still_running: Callable[[], Awaitable[bool]] | None,
                  poll_interval: float) -> None:
    opened: list[BinaryIO] = []
    try:
        while True:
            progressed = False
            if current is not None:
                for raw in _complete_lines(current):
                    progressed = True
                    line = joiner.feed(parse_cri_line(raw))
                    if line is not None and sel.keep(line):
                        await write(sel.render(line))
                        if sel.exhausted:
                            return
            if progressed:
                continue
            # at EOF of the current file: rotated or truncated?
            try:
                st = os.stat(p)
            except FileNotFoundError:
                st = None
            if current is not None and st is not None:
                cur = os.fstat(current.fileno())
                if (st.st_ino, st.st_dev) != (cur.st_ino, cur.st_dev):
                    # drain what was written to the old file before the rename
                    for raw in _complete_lines(current):
                        line = joiner.feed(parse_cri_line(raw))
                        if line is not None and sel.keep(line):
                            await write(sel.render(line))
                            if sel.exhausted:
                                return
                    current = _open_plain(p)
                    opened.append(current)
                    continue
                if st.st_size < current.tell():
                    current.seek(0)
                    continue
            elif current is None and st is not None:
                current = _open_plain(p)
                opened.append(current)
                continue
            if still_running is not None and not await still_running():
                return
            await asyncio.sleep(poll_interval)
    finally:
        for f in opened:
            f.close()
