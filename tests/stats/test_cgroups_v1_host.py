"""cgroup v1 readers against this host's real hierarchies: a pod-like cgroup with two
container-like children, one burning a CPU, one holding 100 MiB of tmpfs pages."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubenode.stats.cgroups import CgroupV1Reader, cgroup_mode
from kubenode.stats.summary import (
    CgroupStatsProvider,
    ContainerInfo,
    NodeStatsConfig,
    PodInfo,
)

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")

pytestmark = [pytest.mark.root, pytest.mark.slow]


@dataclass
class Source:
    pods: list[PodInfo]

    async def pods_for_stats(self) -> list[PodInfo]:
        return self.pods


def _v1_available() -> bool:
    return cgroup_mode(ROOT) in ("hybrid", "legacy") and all(
        (ROOT / c / "cgroup.procs").exists() for c in CONTROLLERS)


def _join(rel: str) -> None:
    pid = str(os.getpid())
    for c in CONTROLLERS:
        (ROOT / c / rel / "cgroup.procs").write_text(pid)


def _proc_cpu_ns(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


@pytest.fixture
def pod_cgroup() -> Iterator[str]:
    if not _v1_available():
        pytest.skip("no cgroup v1 cpu/cpuacct/memory/pids hierarchies here")
    name = f"kntest-{secrets.token_hex(4)}"
    made: list[Path] = []
    procs: list[subprocess.Popen[bytes]] = []
    shm = Path(f"/dev/shm/{name}")
    try:
        for c in CONTROLLERS:
            for rel in (name, f"{name}/busy", f"{name}/mem"):
                (ROOT / c / rel).mkdir()
                made.append(ROOT / c / rel)
        procs.append(subprocess.Popen(["/bin/sh", "-c", "while :; do :; done"],
                                      preexec_fn=lambda: _join(f"{name}/busy")))
        procs.append(subprocess.Popen(["/bin/busybox", "sleep", "120"],
                                      preexec_fn=lambda: _join(f"{name}/mem")))
        subprocess.run(["/bin/busybox", "dd", "if=/dev/zero", f"of={shm}", "bs=1M",
                        "count=100"], check=True, capture_output=True,
                       preexec_fn=lambda: _join(f"{name}/mem"))
        yield name
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shm.unlink(missing_ok=True)
        for d in reversed(made):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


async def test_v1_cpu_and_memory_figures(pod_cgroup: str) -> None:
    reader = CgroupV1Reader(ROOT)
    assert reader.exists(f"/{pod_cgroup}")
    busy_pid = int((ROOT / "cpu" / pod_cgroup / "busy" / "cgroup.procs").read_text().split()[0])
    pod = PodInfo(name="p", namespace="default", uid="u1", cgroup=f"/{pod_cgroup}",
                  containers=[ContainerInfo(name="busy", id="c1", cgroup=f"/{pod_cgroup}/busy"),
                              ContainerInfo(name="mem", id="c2", cgroup=f"/{pod_cgroup}/mem")])
    provider = CgroupStatsProvider(
        config=NodeStatsConfig(node_name="n", root_dir="/tmp", cpu_min_interval=0.5),
        source=Source([pod]), cgroups=reader, now=time.time)
    p0 = _proc_cpu_ns(busy_pid)
    t0 = time.monotonic()
    first = await provider.summary()
    assert "usageNanoCores" not in first["pods"][0]["cpu"]  # no rate from one sample
    await asyncio.sleep(3)
    p1 = _proc_cpu_ns(busy_pid)
    t1 = time.monotonic()
    summary = await provider.summary()
    proc_cores = (p1 - p0) / (t1 - t0) / 1e9
    pod_json = summary["pods"][0]
    busy, mem = pod_json["containers"]
    cg_cores = busy["cpu"]["usageNanoCores"] / 1e9
    print(f"busy loop: cgroup {cg_cores:.3f} cores, /proc {proc_cores:.3f} cores")
    assert proc_cores > 0.3, "the busy loop did not get a CPU at all"
    assert abs(cg_cores - proc_cores) <= 0.1 * proc_cores
    assert pod_json["cpu"]["usageNanoCores"] >= busy["cpu"]["usageNanoCores"] * 0.95
    assert busy["cpu"]["usageCoreNanoSeconds"] >= p1 - p0

    ws = mem["memory"]["workingSetBytes"]
    print(f"100 MiB held: working set {ws / 2**20:.1f} MiB, "
          f"usage {mem['memory']['usageBytes'] / 2**20:.1f} MiB")
    assert abs(ws - (100 << 20)) <= 0.05 * (100 << 20)
    assert mem["memory"]["usageBytes"] >= ws
    assert mem["memory"]["pageFaults"] > 0
    assert pod_json["memory"]["workingSetBytes"] >= ws
    assert pod_json["process_stats"]["process_count"] == 2
    stats = reader.read(f"/{pod_cgroup}/mem")
    assert stats.pids_current == 1
    assert stats.memory_limit_bytes is None  # unlimited
    assert reader.read(f"/{pod_cgroup}/busy").cpu_periods == 0  # no quota: no CFS periods


def test_v1_missing_cgroup_raises() -> None:
    if not _v1_available():
        pytest.skip("no cgroup v1 here")
    reader = CgroupV1Reader(ROOT)
    with pytest.raises(FileNotFoundError):
        reader.read(f"/kntest-absent-{secrets.token_hex(4)}")
    root = reader.read("/")
    assert root.cpu_usage_ns and root.memory_usage_bytes
