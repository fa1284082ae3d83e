"""cgroup readers, v1 and v2 (what cAdvisor's libcontainer handlers read).

Contract: `detect_cgroup_reader(root)` looks at the cgroup filesystem under `root`
(default /sys/fs/cgroup) and returns a `CgroupReader`:

- pure v2 (unified): `<root>/cgroup.controllers` exists -> `CgroupV2Reader(root)`;
- v1 or hybrid (v1 controllers, cgroup2 at `<root>/unified` with no controllers bound)
  -> `CgroupV1Reader(root)`.

`reader.read(path)` takes a cgroup path as the runtime/kubelet names it ("/",
"/kubepods/burstable/pod<uid>/<container-id>") and returns `CgroupStats`; a figure the
kernel does not expose for that cgroup is None; a cgroup that does not exist raises
`FileNotFoundError`. Reading is synchronous file I/O on pseudo files (fast, no blocking).

Derived figures follow cAdvisor/kubelet:
- working set = usage - inactive_file (v1 `total_inactive_file`, v2 `inactive_file`), >= 0;
- RSS = v1 `total_rss`, v2 `anon`;
- page faults = `pgfault` / `pgmajfault` (v1 `total_` prefixed: hierarchical).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup"
_V1_UNLIMITED = 1 << 62  # v1 reports "no limit" as a huge page-rounded number


@dataclass(frozen=True, kw_only=True)
class CgroupStats:
    """One cgroup's counters at one instant (cumulative counters are since creation)."""

    cpu_usage_ns: int | None = None
    cpu_user_ns: int | None = None
    cpu_system_ns: int | None = None
    cpu_periods: int | None = None
    cpu_throttled_periods: int | None = None
    cpu_throttled_ns: int | None = None
    memory_usage_bytes: int | None = None
    memory_working_set_bytes: int | None = None
    memory_rss_bytes: int | None = None
    memory_cache_bytes: int | None = None
    memory_limit_bytes: int | None = None
    page_faults: int | None = None
    major_page_faults: int | None = None
    oom_kills: int | None = None
    pids_current: int | None = None


class CgroupReader(Protocol):
    version: int

    def read(self, path: str) -> CgroupStats: ...

    def exists(self, path: str) -> bool: ...


def parse_flat_keyed(text: str) -> dict[str, int]:
    """Parse "key value" lines (cpu.stat, memory.stat, memory.events)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, OSError):
        return None


def _read_int(path: Path) -> int | None:
    text = _read_text(path)
    if text is None:
        return None
    text = text.strip()
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _read_keyed(path: Path) -> dict[str, int]:
    text = _read_text(path)
    return parse_flat_keyed(text) if text is not None else {}


def _working_set(usage: int | None, inactive_file: int | None) -> int | None:
    if usage is None:
        return None
    ws = usage - (inactive_file or 0)
    return ws if ws > 0 else 0


def _rel(path: str) -> str:
    return path.strip("/")


class CgroupV1Reader:
    """cgroup v1: one hierarchy per controller under `<root>/<controller>`."""

    version = 1

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_CGROUP_ROOT) -> None:
        self.root = Path(root)
        self._dirs = {c: self._controller_dir(c) for c in ("cpu", "cpuacct", "memory", "pids")}

    def _controller_dir(self, controller: str) -> Path | None:
        candidates = [controller, "cpu,cpuacct", "cpuacct,cpu"] if controller in (
            "cpu", "cpuacct") else [controller]
        for name in candidates:
            d = self.root / name
            if d.is_dir():
                return d
        return None

    def controller_path(self, controller: str, path: str) -> Path | None:
        base = self._dirs.get(controller)
        return None if base is None else base / _rel(path)

    def exists(self, path: str) -> bool:
        for c in ("memory", "cpuacct", "cpu"):
            p = self.controller_path(c, path)
            if p is not None and p.is_dir():
                return True
        return False

    def read(self, path: str) -> CgroupStats:
        if not self.exists(path):
            raise FileNotFoundError(f"cgroup {path!r} not found under {self.root}")
        cpuacct = self.controller_path("cpuacct", path)
        cpu = self.controller_path("cpu", path)
        mem = self.controller_path("memory", path)
        pids = self.controller_path("pids", path)
        usage_ns = user_ns = sys_ns = None
        if cpuacct is not None:
            usage_ns = _read_int(cpuacct / "cpuacct.usage")
            user_ns = _read_int(cpuacct / "cpuacct.usage_user")
            sys_ns = _read_int(cpuacct / "cpuacct.usage_sys")
        throttle = _read_keyed(cpu / "cpu.stat") if cpu is not None else {}
        mstat: dict[str, int] = {}
        usage = limit = None
        oom_kills = None
        if mem is not None:
            mstat = _read_keyed(mem / "memory.stat")
            usage = _read_int(mem / "memory.usage_in_bytes")
            limit = _read_int(mem / "memory.limit_in_bytes")
            if limit is not None and limit >= _V1_UNLIMITED:
                limit = None
            oom = _read_keyed(mem / "memory.oom_control")
            oom_kills = oom.get("oom_kill")
        return CgroupStats(
            cpu_usage_ns=usage_ns,
            cpu_user_ns=user_ns,
            cpu_system_ns=sys_ns,
            cpu_periods=throttle.get("nr_periods"),
            cpu_throttled_periods=throttle.get("nr_throttled"),
            cpu_throttled_ns=throttle.get("throttled_time"),
            memory_usage_bytes=usage,
            memory_working_set_bytes=_working_set(usage, mstat.get("total_inactive_file")),
            memory_rss_bytes=mstat.get("total_rss"),
            memory_cache_bytes=mstat.get("total_cache"),
            memory_limit_bytes=limit,
            page_faults=mstat.get("total_pgfault"),
            major_page_faults=mstat.get("total_pgmajfault"),
            oom_kills=oom_kills,
            pids_current=_read_int(pids / "pids.current") if pids is not None else None,
        )


class CgroupV2Reader:
    """cgroup v2 (unified): every controller's files in one directory per cgroup."""

    version = 2

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_CGROUP_ROOT) -> None:
        self.root = Path(root)

    def exists(self, path: str) -> bool:
        return (self.root / _rel(path)).is_dir()

    def read(self, path: str) -> CgroupStats:
        d = self.root / _rel(path)
        if not d.is_dir():
            raise FileNotFoundError(f"cgroup {path!r} not found under {self.root}")
        cpu = _read_keyed(d / "cpu.stat")
        mstat = _read_keyed(d / "memory.stat")
        events = _read_keyed(d / "memory.events")
        usage = _read_int(d / "memory.current")

        def us(key: str) -> int | None:
            v = cpu.get(key)
            return None if v is None else v * 1000

        return CgroupStats(
            cpu_usage_ns=us("usage_usec"),
            cpu_user_ns=us("user_usec"),
            cpu_system_ns=us("system_usec"),
            cpu_periods=cpu.get("nr_periods"),
            cpu_throttled_periods=cpu.get("nr_throttled"),
            cpu_throttled_ns=us("throttled_usec"),
            memory_usage_bytes=usage,
            memory_working_set_bytes=_working_set(usage, mstat.get("inactive_file")),
            memory_rss_bytes=mstat.get("anon"),
            memory_cache_bytes=mstat.get("file"),
            memory_limit_bytes=_read_int(d / "memory.max"),
            page_faults=mstat.get("pgfault"),
            major_page_faults=mstat.get("pgmajfault"),
            oom_kills=events.get("oom_kill"),
            pids_current=_read_int(d / "pids.current"),
        )


def cgroup_mode(root: str | os.PathLike[str] = DEFAULT_CGROUP_ROOT) -> str:
    """"unified" (pure v2), "hybrid" (v1 + cgroup2 at <root>/unified) or "legacy"."""
    r = Path(root)
    if (r / "cgroup.controllers").exists():
        return "unified"
    if (r / "unified" / "cgroup.controllers").exists():
        return "hybrid"
    return "legacy"


def detect_cgroup_reader(root: str | os.PathLike[str] = DEFAULT_CGROUP_ROOT) -> CgroupReader:
    if cgroup_mode(root) == "unified":
        return CgroupV2Reader(root)
    return CgroupV1Reader(root)
