"""Node-wide figures from /proc (what cAdvisor's machine info and root container give).

Contract: pure functions over a `proc_root` (default /proc) so tests can point them at a
fixture tree. `read_meminfo()` returns bytes per key; `read_proc_stat_cpu()` returns the
aggregate non-idle CPU time in nanoseconds (fallback when the root cgroup has no CPU
accounting); `node_memory()` derives usage and working set the way cAdvisor's root
container does when the root cgroup has no memory.current (pure cgroup v2);
`process_count()` and `pid_max()` feed the summary's rlimit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PROC = "/proc"


@dataclass(frozen=True, kw_only=True)
class NodeMemory:
    capacity_bytes: int
    usage_bytes: int
    working_set_bytes: int
    available_bytes: int
    rss_bytes: int


def read_meminfo(proc_root: str | os.PathLike[str] = DEFAULT_PROC) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (Path(proc_root) / "meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        try:
            value = int(parts[0])
        except ValueError:
            continue
        out[key.strip()] = value * 1024 if len(parts) > 1 and parts[1] == "kB" else value
    return out


def clock_ticks() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError):
        return 100


def read_proc_stat_cpu(proc_root: str | os.PathLike[str] = DEFAULT_PROC,
                       *, ticks: int | None = None) -> int:
    """Aggregate busy CPU time (user+nice+system+irq+softirq+steal) in nanoseconds."""
    hz = ticks or clock_ticks()
    for line in (Path(proc_root) / "stat").read_text().splitlines():
        if line.startswith("cpu "):
            f = [int(x) for x in line.split()[1:]]
            f += [0] * (8 - len(f))
            busy = f[0] + f[1] + f[2] + f[5] + f[6] + f[7]
            return busy * 1_000_000_000 // hz
    raise ValueError("no aggregate cpu line in /proc/stat")


def num_cpus(proc_root: str | os.PathLike[str] = DEFAULT_PROC) -> int:
    n = 0
    for line in (Path(proc_root) / "stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            n += 1
    return n or (os.cpu_count() or 1)


def node_memory(meminfo: dict[str, int]) -> NodeMemory:
    total = meminfo.get("MemTotal", 0)
    usage = total - meminfo.get("MemFree", 0)
    ws = max(usage - meminfo.get("Inactive(file)", 0), 0)
    return NodeMemory(capacity_bytes=total, usage_bytes=usage, working_set_bytes=ws,
                      available_bytes=max(total - ws, 0),
                      rss_bytes=meminfo.get("AnonPages", 0))


def process_count(proc_root: str | os.PathLike[str] = DEFAULT_PROC) -> int:
    return sum(1 for e in os.scandir(proc_root) if e.name.isdigit())


def pid_max(proc_root: str | os.PathLike[str] = DEFAULT_PROC) -> int:
    try:
        return int((Path(proc_root) / "sys/kernel/pid_max").read_text().strip())
    except (OSError, ValueError):
        return 32768
