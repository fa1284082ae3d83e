"""Filesystem usage: capacity of the filesystem holding a path (statvfs) and bytes/inodes
used by a directory tree (an os.scandir walk, like cAdvisor's `du`-based fs handler).

Contract: `fs_capacity(path)` -> FsCapacity. `DirUsageCache(now=..., ttl=...)`:
`usage(path)` walks the tree at most once per `ttl` seconds per path (injected clock)
and returns DirUsage(bytes, inodes); bytes are allocated blocks (st_blocks * 512) as du
counts them, hard links counted once; a vanished path gives zeros. The walk does not
follow symlinks nor cross into other filesystems.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class FsCapacity:
    capacity_bytes: int
    available_bytes: int
    inodes: int
    inodes_free: int


@dataclass(frozen=True, kw_only=True)
class DirUsage:
    bytes: int
    inodes: int


def fs_capacity(path: str | os.PathLike[str]) -> FsCapacity:
    st = os.statvfs(path)
    return FsCapacity(capacity_bytes=st.f_blocks * st.f_frsize,
                      available_bytes=st.f_bavail * st.f_frsize,
                      inodes=st.f_files, inodes_free=st.f_ffree)


def dir_usage(path: str | os.PathLike[str]) -> DirUsage:
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return DirUsage(bytes=0, inodes=0)
    seen: set[tuple[int, int]] = set()
    total = top.st_blocks * 512
    inodes = 1
    stack = [os.fspath(path)]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if st.st_dev != top.st_dev:
                    continue
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        continue
                    seen.add(key)
                total += st.st_blocks * 512
                inodes += 1
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return DirUsage(bytes=total, inodes=inodes)


class DirUsageCache:
    def __init__(self, *, now: Callable[[], float], ttl: float = 10.0) -> None:
        self._now = now
        self._ttl = ttl
        self._cache: dict[str, tuple[float, DirUsage]] = {}

    def usage(self, path: str | os.PathLike[str]) -> DirUsage:
        key = os.fspath(path)
        t = self._now()
        hit = self._cache.get(key)
        if hit is not None and t - hit[0] < self._ttl:
            return hit[1]
        value = dir_usage(key)
        self._cache[key] = (t, value)
        return value

    def forget(self, path: str | os.PathLike[str]) -> None:
        self._cache.pop(os.fspath(path), None)
