"""Persistent network namespaces, as `ip netns add` makes them but at a path of ours.

create(): a fresh namespace is bind-mounted onto a file (`unshare --net=FILE true`), so it
outlives every process in it (the pause container joins it by path, CNI configures it by
path). remove(): unmount + unlink; both steps are idempotent."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from kubenode.runtime import mounts


async def create(path: Path) -> None:
    _touch(path)
    proc = await asyncio.create_subprocess_exec(
        "unshare", f"--net={path}", "true",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise OSError(f"creating network namespace {path}: {err.decode().strip()}")


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


async def run_in(path: Path, argv: list[str]) -> str:
    proc = await asyncio.create_subprocess_exec(
        "nsenter", f"--net={path}", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise OSError(f"{' '.join(argv)} in {path}: {err.decode().strip()}")
    return out.decode()


def remove(path: Path) -> None:
    mounts.umount(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def is_mounted(path: Path) -> bool:
    return path in mounts.mountpoints_under([path.parent])
