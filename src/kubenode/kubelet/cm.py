"""Container manager bits the kubelet needs (upstream pkg/kubelet/cm), cgroupfs driver:
remove a pod's cgroup (<root>/kubepods[/<qos>]/pod<uid>) from every hierarchy once all its
containers are gone, and read node capacity (cpu, memory, ephemeral-storage, pids)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from kubenode.api.quantity import format_quantity

CGROUP_FS = Path("/sys/fs/cgroup")


def _hierarchies() -> list[Path]:
    if (CGROUP_FS / "cgroup.controllers").exists():
        return [CGROUP_FS]
    return [p for p in CGROUP_FS.iterdir() if p.is_dir() and not p.is_symlink()]


def remove_cgroup(parent: str) -> None:
    rel = parent.strip("/")
    if not rel:
        return
    for h in _hierarchies():
        d = h / rel
        if not d.is_dir():
            continue
        subs = sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts),
                      reverse=True)
        for s in [*subs, d]:
            with contextlib.suppress(OSError):
                s.rmdir()


def hugepages(root: Path = Path("/sys/kernel/mm/hugepages")) -> dict[str, int]:
    """Pre-allocated huge pages per page size, in bytes: {"hugepages-2Mi": ..., ...}."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for d in sorted(root.iterdir()):
            kib = int(d.name.removeprefix("hugepages-").removesuffix("kB"))
            try:
                count = int((d / "nr_hugepages").read_text())
            except (OSError, ValueError):
                count = 0
            out[f"hugepages-{format_quantity(kib * 1024, binary=True)}"] = count * kib * 1024
    return out


def node_capacity(root_dir: Path) -> dict[str, int]:
    """cpu in millicores, memory, ephemeral-storage and hugepages-<size> in bytes."""
    cpu = len(os.sched_getaffinity(0)) * 1000
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    root = root_dir
    while not root.exists() and root != root.parent:
        root = root.parent
    st = os.statvfs(root)
    return {"cpu": cpu, "memory": mem, "ephemeral-storage": st.f_blocks * st.f_frsize,
            **hugepages()}
