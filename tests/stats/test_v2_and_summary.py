"""cgroup v2 parsing from a fixture tree laid out like a real unified-hierarchy machine
(cgroupfs driver), /proc fixtures, and the /stats/summary JSON shape built from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from kubenode.stats.cgroups import (
    CgroupV1Reader,
    CgroupV2Reader,
    cgroup_mode,
    detect_cgroup_reader,
)
from kubenode.stats.fs import DirUsageCache, dir_usage
from kubenode.stats.network import parse_net_dev
from kubenode.stats.node import read_meminfo, read_proc_stat_cpu
from kubenode.stats.summary import (
    CgroupStatsProvider,
    ContainerInfo,
    CpuSampler,
    NodeStatsConfig,
    PodInfo,
    VolumeInfo,
)

UID = "6f1c3c59-1f0e-4a4b-9d43-2c7e5b0c1a11"
CID = "3b8f2d1e9c7a"
POD_CG = f"kubepods/besteffort/pod{UID}"

ROOT_CPU_STAT = """usage_usec 91829127
user_usec 60311381
system_usec 31517745
core_sched.force_idle_usec 0
nr_periods 0
nr_throttled 0
throttled_usec 0
nr_bursts 0
burst_usec 0
"""

CPU_STAT = """usage_usec {usage}
user_usec 1800343
system_usec 617055
core_sched.force_idle_usec 0
nr_periods 120
nr_throttled 5
throttled_usec 81234
nr_bursts 0
burst_usec 0
"""

MEMORY_STAT = """anon 10358784
file 4243456
kernel 1212416
kernel_stack 98304
pagetables 163840
sec_pagetables 0
percpu 1440
sock 0
vmalloc 0
shmem 0
zswap 0
zswapped 0
file_mapped 2162688
file_dirty 0
file_writeback 0
swapcached 0
anon_thp 0
file_thp 0
shmem_thp 0
inactive_anon 10346496
active_anon 12288
inactive_file 2904064
active_file 1339392
unevictable 0
slab_reclaimable 453496
slab_unreclaimable 384048
slab 837544
workingset_refault_anon 0
workingset_refault_file 0
workingset_activate_anon 0
workingset_activate_file 0
workingset_restore_anon 0
workingset_restore_file 0
workingset_nodereclaim 0
pgscan 0
pgsteal 0
pgscan_kswapd 0
pgscan_direct 0
pgsteal_kswapd 0
pgsteal_direct 0
pgfault 8163
pgmajfault 21
pgrefill 0
pgactivate 324
pgdeactivate 0
pglazyfree 0
pglazyfreed 0
thp_fault_alloc 0
thp_collapse_alloc 0
"""

MEMORY_EVENTS = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n"

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    3293      31    0    0    0     0          0         0     3293      31    0    0    0     0       0          0
  eth0: {rx}    4202    1    2    0     0          0         0   210896    2062    3    4    0     0       0          0
"""  # noqa: E501

MEMINFO = """MemTotal:       24684084 kB
MemFree:        24229876 kB
MemAvailable:   24293264 kB
Buffers:            4748 kB
Cached:           236160 kB
Inactive(file):    94784 kB
AnonPages:         36000 kB
HugePages_Total:       0
"""

PROC_STAT = """cpu  6271 0 3297 147195 463 0 77 65 0 0
cpu0 1779 0 1333 75333 187 0 5 37 0 0
cpu1 4492 0 1964 71862 275 0 72 28 0 0
intr 207115 0 0
ctxt 383973
btime 1763928000
processes 4222
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_v2_tree(root: Path, *, container_usage_usec: int = 2417398) -> None:
    write(root / "cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n")
    write(root / "cgroup.subtree_control", "cpuset cpu io memory hugetlb pids rdma misc\n")
    write(root / "cpu.stat", ROOT_CPU_STAT)
    write(root / "memory.stat", MEMORY_STAT)  # the root has memory.stat, no memory.current
    for rel, usage in ((POD_CG, container_usage_usec + 1000),
                       (f"{POD_CG}/{CID}", container_usage_usec)):
        d = root / rel
        write(d / "cgroup.type", "domain\n")
        write(d / "cpu.stat", CPU_STAT.format(usage=usage))
        write(d / "memory.current", "15925248\n")
        write(d / "memory.stat", MEMORY_STAT)
        write(d / "memory.events", MEMORY_EVENTS)
        write(d / "memory.max", "max\n" if rel == POD_CG else "268435456\n")
        write(d / "pids.current", "4\n")


def make_proc(root: Path, *, pod_rx: int = 175749269) -> None:
    write(root / "stat", PROC_STAT)
    write(root / "meminfo", MEMINFO)
    write(root / "sys/kernel/pid_max", "4194304\n")
    write(root / "1/net/dev", NET_DEV.format(rx=999))
    write(root / "4242/net/dev", NET_DEV.format(rx=pod_rx))


def test_v2_detection_and_parsing(tmp_path: Path) -> None:
    make_v2_tree(tmp_path)
    assert cgroup_mode(tmp_path) == "unified"
    reader = detect_cgroup_reader(tmp_path)
    assert isinstance(reader, CgroupV2Reader)
    s = reader.read(f"/{POD_CG}/{CID}")
    assert s.cpu_usage_ns == 2417398000
    assert s.cpu_user_ns == 1800343000 and s.cpu_system_ns == 617055000
    assert (s.cpu_periods, s.cpu_throttled_periods, s.cpu_throttled_ns) == (120, 5, 81234000)
    assert s.memory_usage_bytes == 15925248
    assert s.memory_working_set_bytes == 15925248 - 2904064
    assert s.memory_rss_bytes == 10358784
    assert (s.page_faults, s.major_page_faults, s.oom_kills, s.pids_current) == (8163, 21, 1, 4)
    assert s.memory_limit_bytes == 268435456
    assert reader.read(f"/{POD_CG}").memory_limit_bytes is None  # "max"
    root = reader.read("/")
    assert root.cpu_usage_ns == 91829127000 and root.memory_usage_bytes is None
    with pytest.raises(FileNotFoundError):
        reader.read("/kubepods/nope")


def test_hybrid_detection(tmp_path: Path) -> None:
    write(tmp_path / "unified" / "cgroup.controllers", "\n")
    (tmp_path / "cpu,cpuacct").mkdir()
    write(tmp_path / "cpu,cpuacct" / "x" / "cpuacct.usage", "123\n")
    assert cgroup_mode(tmp_path) == "hybrid"
    reader = detect_cgroup_reader(tmp_path)
    assert isinstance(reader, CgroupV1Reader)
    assert reader.read("/x").cpu_usage_ns == 123  # combined cpu,cpuacct mount found


def test_proc_parsers(tmp_path: Path) -> None:
    make_proc(tmp_path)
    mi = read_meminfo(tmp_path)
    assert mi["MemTotal"] == 24684084 * 1024 and mi["HugePages_Total"] == 0
    busy = 6271 + 0 + 3297 + 0 + 77 + 65
    assert read_proc_stat_cpu(tmp_path, ticks=100) == busy * 10_000_000
    ifaces = parse_net_dev(NET_DEV.format(rx=5))
    assert [i.name for i in ifaces] == ["eth0"]
    e = ifaces[0]
    assert (e.rx_bytes, e.rx_errors, e.rx_dropped, e.tx_bytes, e.tx_errors) == (5, 1, 2,
                                                                              210896, 3)


def test_dir_usage_and_cache(tmp_path: Path) -> None:
    d = tmp_path / "vol"
    (d / "sub").mkdir(parents=True)
    (d / "a").write_bytes(b"x" * 10000)
    (d / "sub" / "b").write_bytes(b"y" * 5000)
    os_link = d / "sub" / "a-link"
    os_link.hardlink_to(d / "a")  # counted once
    u = dir_usage(d)
    assert u.inodes == 4  # vol, sub, a, b
    assert u.bytes >= 15000
    t = [100.0]
    cache = DirUsageCache(now=lambda: t[0], ttl=10)
    first = cache.usage(d)
    (d / "c").write_bytes(b"z" * 100000)
    assert cache.usage(d) == first  # cached
    t[0] += 11
    assert cache.usage(d).bytes >= first.bytes + 100000
    assert dir_usage(tmp_path / "absent").bytes == 0


def test_cpu_sampler_rates() -> None:
    s = CpuSampler(min_interval=1.0)
    assert s.sample("a", 10.0, 1_000_000_000).usage_nano_cores is None
    assert s.sample("a", 14.0, 3_000_000_000).usage_nano_cores == 500_000_000
    # too close to the last sample: reuse the stored rate
    assert s.sample("a", 14.2, 3_900_000_000).usage_nano_cores == 500_000_000
    assert s.sample("a", 16.0, 5_000_000_000).usage_nano_cores == 1_000_000_000
    assert s.sample("a", 18.0, 10).usage_nano_cores is None  # reset: cgroup re-created


@dataclass
class Source:
    pods: list[PodInfo]

    async def pods_for_stats(self) -> list[PodInfo]:
        return self.pods


def _provider(tmp_path: Path, t: list[float]) -> tuple[CgroupStatsProvider, Path, Path]:
    cg, proc = tmp_path / "cg", tmp_path / "proc"
    make_v2_tree(cg)
    make_proc(proc)
    vol = tmp_path / "volumes" / "cache"
    vol.mkdir(parents=True)
    (vol / "f").write_bytes(b"v" * 8192)
    logs = tmp_path / "logs" / "app"
    logs.mkdir(parents=True)
    (logs / "0.log").write_bytes(b"l" * 4096)
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    pod = PodInfo(name="web", namespace="default", uid=UID, start_time=1763929000.0,
                  cgroup=f"/{POD_CG}", netns_pid=4242,
                  containers=[ContainerInfo(name="app", id=CID, image="busybox:latest",
                                            cgroup=f"/{POD_CG}/{CID}",
                                            start_time=1763929001.0,
                                            rootfs_path=str(rootfs), log_path=str(logs))],
                  volumes=[VolumeInfo(name="cache", path=str(vol))])
    cfg = NodeStatsConfig(node_name="node-a", root_dir=str(tmp_path), proc_root=str(proc),
                          image_fs_path=str(tmp_path / "volumes"), host_netns_pid=1,
                          system_containers={"pods": "/kubepods"})
    p = CgroupStatsProvider(config=cfg, source=Source([pod]),
                            cgroups=detect_cgroup_reader(cg), now=lambda: t[0])
    return p, cg, proc


async def test_summary_shape_and_rates(tmp_path: Path) -> None:
    t = [1763930000.0]
    provider, cg, _ = _provider(tmp_path, t)
    await provider.summary()
    # 4 s later the container used 2 more CPU-seconds -> 0.5 cores
    t[0] += 4
    write(cg / POD_CG / CID / "cpu.stat", CPU_STAT.format(usage=2417398 + 2_000_000))
    write(cg / "cpu.stat", ROOT_CPU_STAT.replace("91829127", str(91829127 + 6_000_000)))
    s = await provider.summary()
    assert set(s) == {"node", "pods"}
    node = s["node"]
    assert node["nodeName"] == "node-a"
    assert node["startTime"] == "2025-11-23T20:00:00Z"
    assert node["cpu"] == {"time": "2025-11-23T20:33:24Z", "usageNanoCores": 1_500_000_000,
                           "usageCoreNanoSeconds": (91829127 + 6_000_000) * 1000}
    mem = node["memory"]
    total = 24684084 * 1024
    used = total - 24229876 * 1024
    assert mem["usageBytes"] == used
    assert mem["workingSetBytes"] == used - 94784 * 1024
    assert mem["availableBytes"] == total - mem["workingSetBytes"]
    assert set(mem) >= {"time", "availableBytes", "usageBytes", "workingSetBytes", "rssBytes"}
    assert node["network"]["name"] == "eth0" and node["network"]["rxBytes"] == 999
    assert set(node["fs"]) == {"time", "availableBytes", "capacityBytes", "usedBytes",
                               "inodesFree", "inodes", "inodesUsed"}
    assert node["runtime"]["imageFs"]["usedBytes"] >= 8192
    assert node["rlimit"]["maxpid"] == 4194304 and node["rlimit"]["curproc"] == 2
    assert [c["name"] for c in node["systemContainers"]] == ["pods"]

    (pod,) = s["pods"]
    assert pod["podRef"] == {"name": "web", "namespace": "default", "uid": UID}
    assert pod["startTime"] == "2025-11-23T20:16:40Z"
    (c,) = pod["containers"]
    assert c["name"] == "app" and c["startTime"] == "2025-11-23T20:16:41Z"
    assert c["cpu"]["usageNanoCores"] == 500_000_000
    assert c["cpu"]["usageCoreNanoSeconds"] == (2417398 + 2_000_000) * 1000
    assert c["memory"] == {"time": "2025-11-23T20:33:24Z",
                           "availableBytes": 268435456 - (15925248 - 2904064),
                           "usageBytes": 15925248, "workingSetBytes": 15925248 - 2904064,
                           "rssBytes": 10358784, "pageFaults": 8163, "majorPageFaults": 21}
    assert c["logs"]["usedBytes"] >= 4096 and c["rootfs"]["inodesUsed"] == 1
    assert "availableBytes" not in pod["memory"]  # pod limit is "max"
    assert pod["network"]["rxBytes"] == 175749269
    assert pod["network"]["interfaces"][0]["txErrors"] == 3
    (vol,) = pod["volume"]
    assert vol["name"] == "cache" and vol["usedBytes"] >= 8192
    eph = pod["ephemeral-storage"]
    assert eph["usedBytes"] == c["rootfs"]["usedBytes"] + c["logs"]["usedBytes"] + \
        vol["usedBytes"]
    assert pod["process_stats"] == {"process_count": 4}

    trimmed = await provider.summary(only_cpu_and_memory=True)
    assert set(trimmed["node"]) == {"nodeName", "systemContainers", "startTime", "cpu",
                                    "memory"}
    assert set(trimmed["pods"][0]) == {"podRef", "startTime", "containers", "cpu", "memory"}


async def test_vanished_container_is_not_an_error(tmp_path: Path) -> None:
    t = [1763930000.0]
    provider, cg, _ = _provider(tmp_path, t)
    for f in (cg / POD_CG / CID).iterdir():
        f.unlink()
    (cg / POD_CG / CID).rmdir()
    snap = await provider.snapshot()
    assert snap.errors == 1
    s = await provider.summary()
    c = s["pods"][0]["containers"][0]
    assert "cpu" not in c and "memory" not in c and c["name"] == "app"
