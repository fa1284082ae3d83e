"""CRI statistics (ContainerStats, PodSandboxStats) from cgroups (v1 or v2), the writable
layer on disk, and the pod's network namespace (/proc/<pause pid>/net/dev).

usage_nano_cores is a rate: it needs two samples, so the last cpu sample of every cgroup
is kept in memory (like cAdvisor); the first call answers without it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from kubenode.cri import api_pb2 as pb
from kubenode.runtime.cgroups import Cgroups, Usage
from kubenode.runtime.state import ContainerRecord, Layout, SandboxRecord


def _u(v: int | None) -> pb.UInt64Value | None:
    return pb.UInt64Value(value=max(0, v)) if v is not None else None


def dir_usage(path: Path) -> tuple[int, int]:
    """(bytes, inodes) under path, not crossing mount points."""
    total, inodes = 0, 0
    try:
        dev = path.stat().st_dev
    except OSError:
        return 0, 0
    for root, dirs, files in os.walk(path):
        inodes += len(dirs) + len(files)
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if st.st_dev == dev:
                total += st.st_blocks * 512
        dirs[:] = [d for d in dirs if _same_dev(os.path.join(root, d), dev)]
    return total, inodes


def _same_dev(path: str, dev: int) -> bool:
    try:
        return os.lstat(path).st_dev == dev
    except OSError:
        return False


def net_dev(pid: int) -> list[pb.NetworkInterfaceUsage]:
    out = []
    try:
        lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    except OSError:
        return []
    for line in lines:
        name, _, rest = line.partition(":")
        f = rest.split()
        if len(f) < 16 or name.strip() == "lo":
            continue
        out.append(pb.NetworkInterfaceUsage(
            name=name.strip(), rx_bytes=pb.UInt64Value(value=int(f[0])),
            rx_errors=pb.UInt64Value(value=int(f[2])), tx_bytes=pb.UInt64Value(value=int(f[8])),
            tx_errors=pb.UInt64Value(value=int(f[10]))))
    return out


class StatsProvider:
    def __init__(self, *, layout: Layout, cgroups: Cgroups, now: Callable[[], int]) -> None:
        self.layout = layout
        self.cgroups = cgroups
        self.now = now
        self._last_cpu: dict[str, tuple[int, int]] = {}

    def _cpu(self, key: str, ts: int, usage: Usage) -> pb.CpuUsage:
        cpu = pb.CpuUsage(timestamp=ts)
        if usage.cpu_ns is not None:
            cpu.usage_core_nano_seconds.value = usage.cpu_ns
            prev = self._last_cpu.get(key)
            if prev is not None and ts > prev[0] and usage.cpu_ns >= prev[1]:
                cpu.usage_nano_cores.value = (usage.cpu_ns - prev[1]) * 10**9 // (ts - prev[0])
            self._last_cpu[key] = (ts, usage.cpu_ns)
        return cpu

    @staticmethod
    def _memory(ts: int, usage: Usage) -> pb.MemoryUsage:
        return pb.MemoryUsage(
            timestamp=ts, working_set_bytes=_u(usage.working_set),
            available_bytes=_u(usage.available), usage_bytes=_u(usage.memory_usage),
            rss_bytes=_u(usage.rss), page_faults=_u(usage.page_faults),
            major_page_faults=_u(usage.major_page_faults))

    def container(self, rec: ContainerRecord) -> pb.ContainerStats:
        cfg = rec.parsed_config
        ts = self.now()
        usage = self.cgroups.usage(rec.cgroups_path)
        upper = self.layout.container_dir(rec.id) / "fs" / "upper"
        used, inodes = dir_usage(upper)
        return pb.ContainerStats(
            attributes=pb.ContainerAttributes(id=rec.id, metadata=cfg.metadata,
                                              labels=cfg.labels, annotations=cfg.annotations),
            cpu=self._cpu(rec.id, ts, usage), memory=self._memory(ts, usage),
            writable_layer=pb.FilesystemUsage(
                timestamp=ts, fs_id=pb.FilesystemIdentifier(mountpoint=str(self.layout.root)),
                used_bytes=pb.UInt64Value(value=used), inodes_used=pb.UInt64Value(value=inodes)))

    def sandbox(self, rec: SandboxRecord, containers: list[ContainerRecord]) -> pb.PodSandboxStats:
        cfg = rec.parsed_config
        ts = self.now()
        usage = self.cgroups.usage(rec.cgroup_parent)
        ifaces = net_dev(rec.pause_pid) if rec.netns and rec.pause_pid else []
        default = next((i for i in ifaces if i.name == "eth0"), ifaces[0] if ifaces else None)
        linux = pb.LinuxPodSandboxStats(
            cpu=self._cpu("pod:" + rec.id, ts, usage), memory=self._memory(ts, usage),
            network=pb.NetworkUsage(timestamp=ts, default_interface=default, interfaces=ifaces),
            process=pb.ProcessUsage(timestamp=ts, process_count=_u(usage.pids)),
            containers=[self.container(c) for c in containers])
        return pb.PodSandboxStats(
            attributes=pb.PodSandboxAttributes(id=rec.id, metadata=cfg.metadata,
                                               labels=cfg.labels, annotations=cfg.annotations),
            linux=linux)
