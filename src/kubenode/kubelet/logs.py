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
- `timestamps` prefixes each line with its timestamp (RFC3339NanoFixed, as upstream)
  and a space;
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


_STREAMS = (b"stdout", b"stderr")
_CHUNK = 1 << 20


class _Pipeline:
    """CRI records -> joined, filtered, rendered output lines (the hot path: no objects
    per record). Partial records wait per stream for their F record; the joined line
    carries its first record's timestamp. `since` is checked until the first line passes
    it: a container's log is written in time order."""

    def __init__(self, opts: LogOptions) -> None:
        self.pending: dict[bytes, tuple[bytes, list[bytes]]] = {}
        self.stream = opts.stream.encode() if opts.stream else None
        self.since = opts.since_time
        self._since_text = b""
        if opts.since_time is not None:
            whole = int(opts.since_time // 1)
            nanos = round((opts.since_time - whole) * 1e9)
            if nanos >= 1_000_000_000:
                whole, nanos = whole + 1, 0
            self._since_text = (dt.datetime.fromtimestamp(whole, dt.UTC)
                                .strftime("%Y-%m-%dT%H:%M:%S").encode()
                                + b".%09dZ" % nanos)
        self.timestamps = opts.timestamps
        self.remaining = opts.limit_bytes

    def lines(self, raws: Iterable[bytes]) -> Iterator[bytes]:
        pending = self.pending
        want = self.stream
        ts_prefix = self.timestamps
        for raw in raws:
            parts = raw.split(b" ", 3)
            if len(parts) >= 3 and parts[2] in (b"F", b"P") and parts[1] in _STREAMS:
                ts, stream = parts[0], parts[1]
                content = parts[3] if len(parts) == 4 else b""
                partial = parts[2] == b"P"
            else:
                rec = parse_cri_line(raw)
                ts, stream, partial, content = rec.timestamp, rec.stream, rec.partial, \
                    rec.content
            if partial:
                if stream in pending:
                    pending[stream][1].append(content)
                else:
                    pending[stream] = (ts, [content])
                continue
            if pending and stream in pending:
                ts, chunks = pending.pop(stream)
                chunks.append(content)
                content = b"".join(chunks)
            if want is not None and stream != want:
                continue
            if self.since is not None:
                if len(ts) == 30 and ts[-1:] == b"Z":  # RFC3339Nano UTC: compare as text
                    if ts < self._since_text:
                        continue
                else:
                    t = parse_timestamp(ts) if ts else None
                    if t is not None and t < self.since:
                        continue
                self.since = None
            if ts_prefix and ts:
                if len(ts) != 30 or ts[-1:] != b"Z":
                    ts = format_timestamp(ts)
                yield ts + b" " + content + b"\n"
            else:
                yield content + b"\n"

    def limit(self, data: bytes) -> bytes:
        if self.remaining is None:
            return data
        data = data[: self.remaining]
        self.remaining -= len(data)
        return data

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


def _all_lines(f: BinaryIO) -> Iterator[bytes]:
    """Every line of a finished file (the last may lack its newline)."""
    rest = b""
    while chunk := f.read(_CHUNK):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield from lines
    if rest:
        yield rest


class _Tailer:
    """Complete lines of a growing file; an incomplete last line waits for its newline."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.rest = b""

    def complete_lines(self) -> list[bytes]:
        return list(self.iter_complete_lines())

    def iter_complete_lines(self) -> Iterator[bytes]:
        while chunk := self.f.read(_CHUNK):
            lines = (self.rest + chunk).split(b"\n")
            self.rest = lines.pop()
            yield from lines

    def reset(self) -> None:
        self.f.seek(0)
        self.rest = b""


def _tail_start(f: BinaryIO, n: int) -> int | None:
    """Offset of a line start from which more than `n` F records follow (reading blocks
    backwards from the end, as upstream's tail does), or None if the file has no more."""
    end = f.seek(0, os.SEEK_END)
    pos = end
    buf = b""
    while pos > 0:
        step = min(64 << 10, pos)
        pos -= step
        f.seek(pos)
        buf = f.read(step) + buf
        first_nl = buf.find(b"\n") if pos > 0 else -1
        body = buf[first_nl + 1:]
        if body.count(b" F ") > n + 1:
            count = sum(1 for line in body.split(b"\n")
                        if line.split(b" ", 3)[2:3] == [b"F"])
            if count > n:
                return pos + first_nl + 1
    return None


def _initial(path: Path, pipe: _Pipeline, current: _Tailer | None,
             tail: int | None) -> Iterable[bytes]:
    if current is not None and tail is not None and pipe.stream is None:
        start = _tail_start(current.f, tail)
        current.f.seek(start or 0)
        if start is not None:
            return pipe.lines(current.iter_complete_lines())
    return _initial_all(path, pipe, current)


def _initial_all(path: Path, pipe: _Pipeline, current: _Tailer | None) -> Iterator[bytes]:
    for old in rotated_files(path):
        try:
            with _open(old) as f:
                yield from pipe.lines(_all_lines(f))
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
    if current is not None:
        yield from pipe.lines(current.iter_complete_lines())


async def read_logs(path: str | os.PathLike[str], opts: LogOptions, write: Writer, *,
                    still_running: Callable[[], Awaitable[bool]] | None = None,
                    poll_interval: float = 0.2) -> None:
    p = Path(path)
    pipe = _Pipeline(opts)
    try:
        current: _Tailer | None = _Tailer(_open_plain(p))
    except FileNotFoundError:
        current = None
        if not rotated_files(p):
            raise
    try:
        lines: Iterable[bytes] = _initial(p, pipe, current, opts.tail_lines)
        if opts.tail_lines is not None:
            lines = deque(lines, maxlen=max(opts.tail_lines, 0))
        out: list[bytes] = []
        size = 0
        for line in lines:
            out.append(pipe.limit(line))
            size += len(line)
            if pipe.exhausted:
                break
            if size >= 256 << 10:
                await write(b"".join(out))
                out, size = [], 0
        if out:
            await write(b"".join(out))
        if not opts.follow or pipe.exhausted:
            return
        await _follow(p, current, pipe, write, still_running, poll_interval)
    finally:
        if current is not None:
            current.f.close()


async def _drain(t: _Tailer, pipe: _Pipeline, write: Writer) -> bool:
    """Write what was appended to `t`; True if anything was read."""
    raws = t.complete_lines()
    if not raws:
        return False
    out = [pipe.limit(line) for line in pipe.lines(raws) if not pipe.exhausted]
    if out:
        await write(b"".join(out))
    return True


async def _follow(p: Path, current: _Tailer | None, pipe: _Pipeline, write: Writer,
                  still_running: Callable[[], Awaitable[bool]] | None,
                  poll_interval: float) -> None:
    opened: list[BinaryIO] = []
    try:
        while not pipe.exhausted:
            if current is not None and await _drain(current, pipe, write):
                continue
            # at EOF of the current file: rotated or truncated?
            try:
                st = os.stat(p)
            except FileNotFoundError:
                st = None
            if current is not None and st is not None:
                cur = os.fstat(current.f.fileno())
                if (st.st_ino, st.st_dev) != (cur.st_ino, cur.st_dev):
                    # drain what was written to the old file before the rename
                    await _drain(current, pipe, write)
                    if pipe.exhausted:
                        return
                    current = _Tailer(_open_plain(p))
                    opened.append(current.f)
                    continue
                if st.st_size < current.f.tell():
                    current.reset()
                    continue
            elif current is None and st is not None:
                current = _Tailer(_open_plain(p))
                opened.append(current.f)
                continue
            if still_running is not None and not await still_running():
                return
            await asyncio.sleep(poll_interval)
    finally:
        for f in opened:
            f.close()
