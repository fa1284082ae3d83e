"""`kubenode runtime check`: list resources the runtime made that no record owns any
more (mounts, network namespaces, runc containers, conmon monitors, bundles, exit files,
IP allocations, cgroups under the default parent); exit status 1 if there is any.

Reads the same on-disk state as the running runtime and changes nothing, so it can run
next to it (a pod being created in that very moment can show up as a false positive)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kubenode.runtime import mounts
from kubenode.runtime.cgroups import Cgroups
from kubenode.runtime.config import RuntimeConfig
from kubenode.runtime.runc import RUNC
from kubenode.runtime.sandbox import DEFAULT_CGROUP_PARENT
from kubenode.runtime.state import Layout, Store


@dataclass(frozen=True, kw_only=True)
class Leak:
    kind: str
    what: str

    def __str__(self) -> str:
        return f"leaked {self.kind}: {self.what}"


def _conmon_bundles() -> list[tuple[int, Path]]:
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            argv = Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith("conmon") or "-b" not in argv:
            continue
        i = argv.index("-b")
        if i + 1 < len(argv):
            out.append((int(p), Path(argv[i + 1])))
    return out


def find_leaks(layout: Layout, *, cgroups: Cgroups | None = None) -> list[Leak]:
    store = Store(layout=layout)
    store.load()
    known = set(store.sandboxes) | set(store.containers)
    leaks: list[Leak] = []
    for mp in mounts.mountpoints_under([layout.root, layout.state]):
        rel = mp.relative_to(layout.state) if mp.is_relative_to(layout.state) else None
        owner = rel.parts[1] if rel is not None and len(rel.parts) > 1 else ""
        if owner not in known:
            leaks.append(Leak(kind="mount", what=str(mp)))
    for sub in ("netns", "shm", "bundles"):
        d = layout.state / sub
        if d.is_dir():
            for entry in sorted(os.listdir(d)):
                if entry not in known:
                    leaks.append(Leak(kind=sub, what=str(d / entry)))
    for d in (layout.exit_dir, layout.socket_dir):
        if d.is_dir():
            for entry in sorted(os.listdir(d)):
                if entry not in known:
                    leaks.append(Leak(kind="conmon file", what=str(d / entry)))
    for kind in ("sandboxes", "containers"):
        d = layout.root / kind
        if d.is_dir():
            for entry in sorted(os.listdir(d)):
                if entry not in known:
                    leaks.append(Leak(kind=f"{kind[:-1]} dir", what=str(d / entry)))
    if layout.runc_root.is_dir():
        res = subprocess.run([RUNC, "--root", str(layout.runc_root), "list", "--format",
                              "json"], capture_output=True, text=True, check=False)
        for c in json.loads(res.stdout or "null") or []:
            if c.get("id") not in known:
                leaks.append(Leak(kind="runc container", what=f"{c.get('id')} ({c.get('status')})"))
    bundles = layout.state / "bundles"
    for pid, bundle in _conmon_bundles():
        if bundle.parent == bundles and bundle.name not in known:
            leaks.append(Leak(kind="conmon process", what=f"pid {pid} for {bundle.name}"))
    ipam = layout.cni_data_dir
    if ipam.is_dir():
        for net in ipam.iterdir():
            for f in net.iterdir() if net.is_dir() else []:
                if f.name.startswith("last_reserved_ip") or f.name == "lock":
                    continue
                try:
                    owner = f.read_text().split("\n", 1)[0].strip()
                except OSError:
                    continue
                if owner not in known:
                    leaks.append(Leak(kind="IP allocation", what=f"{f.name} ({net.name})"))
    cg = cgroups or Cgroups()
    for d in cg.dirs(DEFAULT_CGROUP_PARENT):
        if d.is_dir():
            for entry in sorted(p.name for p in d.iterdir() if p.is_dir()):
                if len(entry) == 64 and entry not in known:
                    leaks.append(Leak(kind="cgroup", what=str(d / entry)))
    return leaks


def main(config: RuntimeConfig) -> int:
    leaks = find_leaks(Layout(root=config.root, state=config.state))
    for leak in leaks:
        print(leak)
    if not leaks:
        print("kubenode runtime check: no leaked resources")
    return 1 if leaks else 0
