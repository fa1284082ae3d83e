"""Steps shared by pause and app containers: the overlayfs rootfs, the bundle, the
conmon-run process, and reading its exit status (exit files survive runtime restarts)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubenode.runtime import mounts
from kubenode.runtime.conmon import ConmonPaths
from kubenode.runtime.state import Layout


@dataclass(frozen=True, kw_only=True)
class ExitStatus:
    code: int
    finished_at: int  # ns
    oom: bool


def conmon_paths(layout: Layout, cid: str, *, persist: Path, log_path: Path) -> ConmonPaths:
    return ConmonPaths(bundle=layout.bundle(cid), log_path=log_path,
                       exit_dir=layout.exit_dir, socket_dir=layout.socket_dir,
                       persist_dir=persist)


def mount_rootfs(layout: Layout, cid: str, *, layers: Sequence[Path], writable: Path) -> Path:
    target = layout.bundle(cid) / "rootfs"
    if os.path.ismount(target):
        return target
    mounts.mount_overlay(lower=list(layers), upper=writable / "upper",
                         work=writable / "work", target=target,
                         links_dir=layout.state / "l")
    return target


def write_spec(layout: Layout, cid: str, spec: dict[str, Any]) -> None:
    path = layout.bundle(cid) / "config.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(spec))
    os.replace(tmp, path)


def read_spec(layout: Layout, cid: str) -> dict[str, Any] | None:
    try:
        spec: dict[str, Any] = json.loads((layout.bundle(cid) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return spec


def exit_status(layout: Layout, cid: str, *, persist: Path) -> ExitStatus | None:
    for path in (layout.exit_dir / cid, persist / "exit"):
        try:
            text = path.read_text().strip()
            st = path.stat()
        except OSError:
            continue
        if not text:
            continue  # conmon writes the file in one go; an empty one is not done yet
        try:
            code = int(text)
        except ValueError:
            code = 255
        oom = (persist / "oom").exists() or (layout.bundle(cid) / "oom").exists()
        return ExitStatus(code=code, finished_at=st.st_mtime_ns, oom=oom)
    return None


async def wait_exit(layout: Layout, cid: str, *, persist: Path,
                    timeout_s: float) -> ExitStatus | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = 0.01
    while True:
        st = exit_status(layout, cid, persist=persist)
        if st is not None or loop.time() >= deadline:
            return st
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


def remove_bundle(layout: Layout, cid: str) -> None:
    bundle = layout.bundle(cid)
    mounts.umount(bundle / "rootfs")  # the only mount we make in a bundle
    shutil.rmtree(bundle, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (layout.exit_dir / cid).unlink()
    sock = layout.socket_dir / cid  # conmon's attach socket dir, or a symlink to it
    if sock.is_symlink():
        sock.unlink()
    else:
        shutil.rmtree(sock, ignore_errors=True)
