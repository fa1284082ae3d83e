"""The stats provider behind /stats/summary, /metrics/cadvisor and /metrics/resource.

Contract:
- Input: a `PodStatsSource` (the kubelet's view of the pods bound to this node: cgroup
  paths, a pid inside each pod's network namespace, container rootfs and log dirs,
  volume dirs) and a `NodeStatsConfig` (node name, fs paths, system containers).
- `CgroupStatsProvider.snapshot()` reads every cgroup, /proc, netns and fs figure once and
  returns a `StatsSnapshot` (dataclasses). CPU rates (`usageNanoCores`) come from a
  `CpuSampler`: the rate between the previous sample of the same cgroup and this one;
  a sample closer than `min_interval` to the stored one reuses the stored rate (so
  concurrent scrapes do not give noisy rates). The first sample of a cgroup has no rate.
- `summary_json(snapshot)` renders the upstream statsapi.Summary JSON shape
  (k8s.io/kubelet/pkg/apis/stats/v1alpha1); `only_cpu_and_memory` trims like upstream.
- Reading runs in a worker thread (file walks can be slow); the clock is injected.
- A cgroup that vanished between listing and reading (container just exited) gives a
  container without cpu/memory figures, never an error.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubenode.stats import node as nodeproc
from kubenode.stats.cgroups import CgroupReader, CgroupStats
from kubenode.stats.fs import DirUsage, DirUsageCache, FsCapacity, fs_capacity
from kubenode.stats.network import InterfaceStats, read_net_dev

log = logging.getLogger(__name__)


# ---- inputs -------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ContainerInfo:
    name: str
    id: str
    image: str = ""
    cgroup: str | None = None          # e.g. "/kubepods/besteffort/pod<uid>/<id>"
    start_time: float | None = None    # unix seconds
    rootfs_path: str | None = None     # the container's writable layer dir
    log_path: str | None = None        # /var/log/pods/<ns>_<pod>_<uid>/<container>


@dataclass(frozen=True, kw_only=True)
class VolumeInfo:
    name: str
    path: str
    ephemeral: bool = True             # emptyDir/configMap/secret...: counts in ephemeral-storage


@dataclass(frozen=True, kw_only=True)
class PodInfo:
    name: str
    namespace: str
    uid: str
    start_time: float | None = None
    cgroup: str | None = None          # e.g. "/kubepods/besteffort/pod<uid>"
    netns_pid: int | None = None       # any pid in the pod's network namespace (the sandbox)
    containers: list[ContainerInfo] = field(default_factory=list)
    volumes: list[VolumeInfo] = field(default_factory=list)


class PodStatsSource(Protocol):
    """The kubelet's running pods, as the stats provider needs them."""

    async def pods_for_stats(self) -> list[PodInfo]: ...


@dataclass(frozen=True, kw_only=True)
class NodeStatsConfig:
    node_name: str
    root_dir: str = "/var/lib/kubelet"          # node fs = fs holding this dir
    image_fs_path: str | None = None            # runtime image store dir (imageFs)
    root_cgroup: str = "/"
    # name -> cgroup path, upstream names: "kubelet", "runtime", "pods", "misc"
    system_containers: dict[str, str] = field(default_factory=dict)
    host_netns_pid: int | str = 1
    proc_root: str = "/proc"
    fs_cache_ttl: float = 10.0
    cpu_min_interval: float = 1.0


# ---- snapshot -----------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class CpuUsage:
    usage_core_ns: int | None
    usage_nano_cores: int | None


@dataclass(frozen=True, kw_only=True)
class FsStats:
    capacity: FsCapacity
    used_bytes: int
    inodes_used: int


@dataclass(frozen=True, kw_only=True)
class CgroupSnapshot:
    stats: CgroupStats | None
    cpu: CpuUsage | None


@dataclass(frozen=True, kw_only=True)
class ContainerSnapshot:
    info: ContainerInfo
    cgroup: CgroupSnapshot
    rootfs: FsStats | None
    logs: FsStats | None


@dataclass(frozen=True, kw_only=True)
class VolumeSnapshot:
    info: VolumeInfo
    fs: FsStats | None


@dataclass(frozen=True, kw_only=True)
class PodSnapshot:
    info: PodInfo
    cgroup: CgroupSnapshot
    network: list[InterfaceStats]
    containers: list[ContainerSnapshot]
    volumes: list[VolumeSnapshot]


@dataclass(frozen=True, kw_only=True)
class NodeSnapshot:
    name: str
    boot_time: float | None
    num_cpus: int
    cgroup: CgroupSnapshot
    memory: nodeproc.NodeMemory
    network: list[InterfaceStats]
    fs: FsStats | None
    image_fs: FsStats | None
    max_pid: int
    cur_proc: int
    system_containers: dict[str, CgroupSnapshot]


@dataclass(frozen=True, kw_only=True)
class StatsSnapshot:
    time: float
    node: NodeSnapshot
    pods: list[PodSnapshot]
    errors: int = 0           # pods/containers whose figures could not be read


# ---- CPU rate -----------------------------------------------------------------------

class CpuSampler:
    """usageNanoCores from consecutive cumulative samples, per key (cgroup path)."""

    def __init__(self, *, min_interval: float = 1.0) -> None:
        self._min = min_interval
        self._last: dict[str, tuple[float, int, int | None]] = {}

    def sample(self, key: str, t: float, usage_ns: int | None) -> CpuUsage:
        if usage_ns is None:
            return CpuUsage(usage_core_ns=None, usage_nano_cores=None)
        prev = self._last.get(key)
        if prev is None:
            self._last[key] = (t, usage_ns, None)
            return CpuUsage(usage_core_ns=usage_ns, usage_nano_cores=None)
        pt, pusage, prate = prev
        if t - pt < self._min:
            return CpuUsage(usage_core_ns=usage_ns, usage_nano_cores=prate)
        if usage_ns < pusage:  # counter reset: cgroup re-created
            self._last[key] = (t, usage_ns, None)
            return CpuUsage(usage_core_ns=usage_ns, usage_nano_cores=None)
        rate = int((usage_ns - pusage) / (t - pt))
        self._last[key] = (t, usage_ns, rate)
        return CpuUsage(usage_core_ns=usage_ns, usage_nano_cores=rate)

    def retain(self, keys: set[str]) -> None:
        for k in list(self._last):
            if k not in keys:
                del self._last[k]


# ---- provider -----------------------------------------------------------------------

class CgroupStatsProvider:
    def __init__(self, *, config: NodeStatsConfig, source: PodStatsSource,
                 cgroups: CgroupReader, now: Callable[[], float]) -> None:
        self.config = config
        self._source = source
        self._cgroups = cgroups
        self._now = now
        self._cpu = CpuSampler(min_interval=config.cpu_min_interval)
        self._du = DirUsageCache(now=now, ttl=config.fs_cache_ttl)
        self._lock = asyncio.Lock()

    async def snapshot(self) -> StatsSnapshot:
        pods = await self._source.pods_for_stats()
        async with self._lock:  # the sampler and caches are not thread-safe
            return await asyncio.to_thread(self._collect, pods)

    async def summary(self, *, only_cpu_and_memory: bool = False) -> dict[str, Any]:
        return summary_json(await self.snapshot(), only_cpu_and_memory=only_cpu_and_memory)

    async def run(self, *, interval: float = 10.0) -> None:
        """Housekeeping loop: sample periodically so rates are fresh when scraped."""
        while True:
            try:
                await self.snapshot()
            except Exception:
                log.exception("stats housekeeping failed")
            await asyncio.sleep(interval)

    # -- synchronous collection (worker thread) --
    def _cgroup(self, path: str | None, t: float) -> CgroupSnapshot:
        if path is None:
            return CgroupSnapshot(stats=None, cpu=None)
        try:
            stats = self._cgroups.read(path)
        except FileNotFoundError:
            return CgroupSnapshot(stats=None, cpu=None)
        return CgroupSnapshot(stats=stats, cpu=self._cpu.sample(path, t, stats.cpu_usage_ns))

    def _dir_fs(self, path: str | None) -> FsStats | None:
        if path is None:
            return None
        try:
            cap = fs_capacity(path)
        except OSError:
            return None
        u: DirUsage = self._du.usage(path)
        return FsStats(capacity=cap, used_bytes=u.bytes, inodes_used=u.inodes)

    def _collect(self, pods: list[PodInfo]) -> StatsSnapshot:
        cfg = self.config
        t = self._now()
        keys: set[str] = set()
        errors = 0
        root = self._cgroup(cfg.root_cgroup, t)
        keys.add(cfg.root_cgroup)
        meminfo = nodeproc.read_meminfo(cfg.proc_root)
        mem = nodeproc.node_memory(meminfo)
        rs = root.stats
        if rs is not None and rs.memory_usage_bytes is not None:
            ws = rs.memory_working_set_bytes or 0
            mem = nodeproc.NodeMemory(
                capacity_bytes=mem.capacity_bytes, usage_bytes=rs.memory_usage_bytes,
                working_set_bytes=ws, available_bytes=max(mem.capacity_bytes - ws, 0),
                rss_bytes=rs.memory_rss_bytes if rs.memory_rss_bytes is not None
                else mem.rss_bytes)
        if rs is None or rs.cpu_usage_ns is None:
            usage = nodeproc.read_proc_stat_cpu(cfg.proc_root)
            root = CgroupSnapshot(stats=rs, cpu=self._cpu.sample("proc:stat", t, usage))
        try:
            node_net = read_net_dev(cfg.host_netns_pid, proc_root=cfg.proc_root)
        except OSError:
            node_net = []
        node_fs = None
        try:
            cap = fs_capacity(cfg.root_dir)
            node_fs = FsStats(capacity=cap, used_bytes=cap.capacity_bytes - cap.available_bytes,
                              inodes_used=cap.inodes - cap.inodes_free)
        except OSError:
            pass
        system = {}
        for name, path in cfg.system_containers.items():
            system[name] = self._cgroup(path, t)
            keys.add(path)
        pod_snaps: list[PodSnapshot] = []
        for p in pods:
            pc = self._cgroup(p.cgroup, t)
            if p.cgroup:
                keys.add(p.cgroup)
            net: list[InterfaceStats] = []
            if p.netns_pid:
                try:
                    net = read_net_dev(p.netns_pid, proc_root=cfg.proc_root)
                except OSError:
                    errors += 1
            containers = []
            for c in p.containers:
                cs = self._cgroup(c.cgroup, t)
                if c.cgroup:
                    keys.add(c.cgroup)
                    if cs.stats is None:
                        errors += 1
                containers.append(ContainerSnapshot(info=c, cgroup=cs,
                                                    rootfs=self._dir_fs(c.rootfs_path),
                                                    logs=self._dir_fs(c.log_path)))
            vols = [VolumeSnapshot(info=v, fs=self._dir_fs(v.path)) for v in p.volumes]
            pod_snaps.append(PodSnapshot(info=p, cgroup=pc, network=net,
                                         containers=containers, volumes=vols))
        self._cpu.retain(keys | {"proc:stat"})
        return StatsSnapshot(
            time=t,
            node=NodeSnapshot(
                name=cfg.node_name, boot_time=_boot_time(cfg.proc_root),
                num_cpus=nodeproc.num_cpus(cfg.proc_root), cgroup=root, memory=mem,
                network=node_net, fs=node_fs, image_fs=self._dir_fs(cfg.image_fs_path),
                max_pid=nodeproc.pid_max(cfg.proc_root),
                cur_proc=nodeproc.process_count(cfg.proc_root), system_containers=system),
            pods=pod_snaps, errors=errors)


def _boot_time(proc_root: str) -> float | None:
    try:
        with open(f"{proc_root}/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


# ---- JSON rendering -----------------------------------------------------------------

def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def cpu_json(cg: CgroupSnapshot, t: str) -> dict[str, Any] | None:
    if cg.cpu is None or cg.cpu.usage_core_ns is None:
        return None
    return _drop_none({"time": t, "usageNanoCores": cg.cpu.usage_nano_cores,
                       "usageCoreNanoSeconds": cg.cpu.usage_core_ns})


def memory_json(s: CgroupStats | None, t: str) -> dict[str, Any] | None:
    if s is None or s.memory_usage_bytes is None:
        return None
    avail = None
    if s.memory_limit_bytes is not None and s.memory_working_set_bytes is not None:
        avail = max(s.memory_limit_bytes - s.memory_working_set_bytes, 0)
    return _drop_none({"time": t, "availableBytes": avail, "usageBytes": s.memory_usage_bytes,
                       "workingSetBytes": s.memory_working_set_bytes,
                       "rssBytes": s.memory_rss_bytes, "pageFaults": s.page_faults,
                       "majorPageFaults": s.major_page_faults})


def fs_json(f: FsStats | None, t: str) -> dict[str, Any] | None:
    if f is None:
        return None
    return {"time": t, "availableBytes": f.capacity.available_bytes,
            "capacityBytes": f.capacity.capacity_bytes, "usedBytes": f.used_bytes,
            "inodesFree": f.capacity.inodes_free, "inodes": f.capacity.inodes,
            "inodesUsed": f.inodes_used}


def network_json(ifaces: list[InterfaceStats], t: str,
                 default: str = "eth0") -> dict[str, Any] | None:
    if not ifaces:
        return None
    items = [{"name": i.name, "rxBytes": i.rx_bytes, "rxErrors": i.rx_errors,
              "txBytes": i.tx_bytes, "txErrors": i.tx_errors} for i in ifaces]
    out: dict[str, Any] = {"time": t}
    top = next((i for i in items if i["name"] == default), None)
    if top is not None:
        out.update(top)
    out["interfaces"] = items
    return out


def _ephemeral(p: PodSnapshot, t: str) -> dict[str, Any] | None:
    parts = [c.rootfs for c in p.containers] + [c.logs for c in p.containers] + [
        v.fs for v in p.volumes if v.info.ephemeral]
    present = [f for f in parts if f is not None]
    if not present:
        return None
    cap = present[0].capacity
    return {"time": t, "availableBytes": cap.available_bytes,
            "capacityBytes": cap.capacity_bytes,
            "usedBytes": sum(f.used_bytes for f in present),
            "inodesFree": cap.inodes_free, "inodes": cap.inodes,
            "inodesUsed": sum(f.inodes_used for f in present)}


def summary_json(s: StatsSnapshot, *, only_cpu_and_memory: bool = False) -> dict[str, Any]:
    t = rfc3339(s.time)
    n = s.node
    node: dict[str, Any] = {"nodeName": n.name}
    sys_list = []
    for name, cg in n.system_containers.items():
        sys_list.append(_drop_none({"name": name, "startTime": rfc3339(n.boot_time)
                                    if n.boot_time else None,
                                    "cpu": cpu_json(cg, t), "memory": memory_json(cg.stats, t)}))
    if sys_list:
        node["systemContainers"] = sys_list
    if n.boot_time:
        node["startTime"] = rfc3339(n.boot_time)
    node["cpu"] = cpu_json(n.cgroup, t)
    node["memory"] = {"time": t, "availableBytes": n.memory.available_bytes,
                      "usageBytes": n.memory.usage_bytes,
                      "workingSetBytes": n.memory.working_set_bytes,
                      "rssBytes": n.memory.rss_bytes,
                      **_drop_none({"pageFaults": n.cgroup.stats.page_faults
                                    if n.cgroup.stats else None,
                                    "majorPageFaults": n.cgroup.stats.major_page_faults
                                    if n.cgroup.stats else None})}
    if not only_cpu_and_memory:
        node["network"] = network_json(n.network, t)
        node["fs"] = fs_json(n.fs, t)
        if n.image_fs is not None:
            node["runtime"] = {"imageFs": fs_json(n.image_fs, t)}
        node["rlimit"] = {"time": t, "maxpid": n.max_pid, "curproc": n.cur_proc}
    pods = []
    for p in s.pods:
        containers = []
        for c in p.containers:
            cj: dict[str, Any] = {"name": c.info.name}
            if c.info.start_time is not None:
                cj["startTime"] = rfc3339(c.info.start_time)
            cj["cpu"] = cpu_json(c.cgroup, t)
            cj["memory"] = memory_json(c.cgroup.stats, t)
            if not only_cpu_and_memory:
                cj["rootfs"] = fs_json(c.rootfs, t)
                cj["logs"] = fs_json(c.logs, t)
            containers.append(_drop_none(cj))
        pj: dict[str, Any] = {
            "podRef": {"name": p.info.name, "namespace": p.info.namespace, "uid": p.info.uid},
        }
        if p.info.start_time is not None:
            pj["startTime"] = rfc3339(p.info.start_time)
        pj["containers"] = containers
        pj["cpu"] = cpu_json(p.cgroup, t)
        pj["memory"] = memory_json(p.cgroup.stats, t)
        if not only_cpu_and_memory:
            pj["network"] = network_json(p.network, t)
            vols = [{**(fs_json(v.fs, t) or {"time": t}), "name": v.info.name}
                    for v in p.volumes]
            if vols:
                pj["volume"] = vols
            pj["ephemeral-storage"] = _ephemeral(p, t)
            if p.cgroup.stats is not None and p.cgroup.stats.pids_current is not None:
                pj["process_stats"] = {"process_count": p.cgroup.stats.pids_current}
        pods.append(_drop_none(pj))
    return {"node": _drop_none(node), "pods": pods}
