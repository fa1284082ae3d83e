"""cgroupfs (driver "cgroupfs") for containers: where a cgroupsPath lives on v1 and v2,
what it uses, and whether the OOM killer fired in it. runc creates and configures the
cgroups from the OCI spec (`linux.cgroupsPath`, `linux.resources`); we only read them and
remove directories we created ourselves.

Hierarchy modes: "v2" (cgroup2 at /sys/fs/cgroup), "v1" (one hierarchy per controller
under /sys/fs/cgroup/<controller>, possibly with a cgroup2 at /sys/fs/cgroup/unified)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices",
                  "freezer", "hugetlb", "net_cls", "net_prio", "perf_event", "systemd")


@dataclass(frozen=True, kw_only=True)
class Usage:
    cpu_ns: int | None = None
    memory_usage: int | None = None
    working_set: int | None = None
    rss: int | None = None
    page_faults: int | None = None
    major_page_faults: int | None = None
    available: int | None = None
    pids: int | None = None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _kv(text: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    t = text.strip()
    return int(t) if t.lstrip("-").isdigit() else None


class Cgroups:
    def __init__(self, *, base: Path = Path("/sys/fs/cgroup")) -> None:
        self.base = base
        self.v2 = self._is_cgroup2(base)

    @staticmethod
    def _is_cgroup2(path: Path) -> bool:
        # a cgroup2 mount exposes cgroup.controllers at its root; v1/hybrid has a tmpfs
        return (path / "cgroup.controllers").exists()

    @property
    def version(self) -> str:
        return "v2" if self.v2 else "v1"

    def dirs(self, cgroups_path: str) -> list[Path]:
        rel = cgroups_path.strip("/")
        if self.v2:
            return [self.base / rel]
        return [self.base / c / rel for c in V1_CONTROLLERS if (self.base / c).is_dir()]

    def _v1(self, controller: str, cgroups_path: str) -> Path:
        return self.base / controller / cgroups_path.strip("/")

    def exists(self, cgroups_path: str) -> bool:
        return any(d.is_dir() for d in self.dirs(cgroups_path))

    def usage(self, cgroups_path: str) -> Usage:
        if self.v2:
            d = self.base / cgroups_path.strip("/")
            cpu = _kv(_read(d / "cpu.stat"))
            mem = _kv(_read(d / "memory.stat"))
            current = _int(_read(d / "memory.current"))
            limit = _int(_read(d / "memory.max"))
            inactive = mem.get("inactive_file", 0)
            ws = max(0, current - inactive) if current is not None else None
            return Usage(
                cpu_ns=cpu["usage_usec"] * 1000 if "usage_usec" in cpu else None,
                memory_usage=current, working_set=ws, rss=mem.get("anon"),
                page_faults=mem.get("pgfault"), major_page_faults=mem.get("pgmajfault"),
                available=(max(0, limit - ws) if limit is not None and ws is not None else None),
                pids=_int(_read(d / "pids.current")))
        mem_dir = self._v1("memory", cgroups_path)
        mem = _kv(_read(mem_dir / "memory.stat"))
        usage = _int(_read(mem_dir / "memory.usage_in_bytes"))
        limit = _int(_read(mem_dir / "memory.limit_in_bytes"))
        inactive = mem.get("total_inactive_file", 0)
        ws = max(0, usage - inactive) if usage is not None else None
        if limit is not None and limit >= (1 << 62):
            limit = None
        return Usage(
            cpu_ns=_int(_read(self._v1("cpuacct", cgroups_path) / "cpuacct.usage")),
            memory_usage=usage, working_set=ws, rss=mem.get("total_rss"),
            page_faults=mem.get("total_pgfault"), major_page_faults=mem.get("total_pgmajfault"),
            available=(max(0, limit - ws) if limit is not None and ws is not None else None),
            pids=_int(_read(self._v1("pids", cgroups_path) / "pids.current")))

    def oom_killed(self, cgroups_path: str) -> bool:
        if self.v2:
            ev = _kv(_read(self.base / cgroups_path.strip("/") / "memory.events"))
            return ev.get("oom_kill", 0) > 0
        ctl = _kv(_read(self._v1("memory", cgroups_path) / "memory.oom_control"))
        return ctl.get("oom_kill", 0) > 0

    def remove(self, cgroups_path: str) -> None:
        """rmdir the cgroup (and nothing above it) in every hierarchy; absent is fine."""
        for d in self.dirs(cgroups_path):
            try:
                _rmdir_tree(d)
            except FileNotFoundError:
                pass
            except OSError as err:  # EBUSY: a process still in it; `runtime check` reports it
                log.warning("cannot remove cgroup path=%s err=%s", d, err)


def _rmdir_tree(d: Path) -> None:
    for child in d.iterdir():
        if child.is_dir():
            _rmdir_tree(child)
    d.rmdir()
