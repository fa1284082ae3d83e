"""mount(2)/umount2(2) through libc: overlayfs rootfs, tmpfs for /dev/shm, bind mounts.

Every helper is synchronous and fast (one syscall); callers run them inline."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_BIND = 4096
MNT_DETACH = 2


@functools.cache
def _libc() -> ctypes.CDLL:
    # once: find_library runs `ldconfig -p` (a process) every time it is asked
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def mount(source: str, target: Path, fstype: str, flags: int = 0, data: str = "") -> None:
    libc = _libc()
    rc = libc.mount(source.encode(), str(target).encode(), fstype.encode(),
                    ctypes.c_ulong(flags), data.encode() if data else None)
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {fstype} on {target}: {os.strerror(e)}")


def umount(target: Path) -> None:
    """Lazy-unmount `target`; a target that is not mounted (or absent) is fine."""
    libc = _libc()
    while True:
        if libc.umount2(str(target).encode(), MNT_DETACH) == 0:
            continue  # stacked mounts: repeat until nothing is mounted there
        e = ctypes.get_errno()
        if e in (errno.EINVAL, errno.ENOENT):
            return
        raise OSError(e, f"umount {target}: {os.strerror(e)}")


MAX_MOUNT_DATA = 4000  # the kernel copies one page of mount options


def mount_overlay(*, lower: Sequence[Path], upper: Path, work: Path, target: Path,
                  links_dir: Path | None = None) -> None:
    """overlayfs on target. No layers (a scratch image): one empty lowerdir. Too many
    layers for one page of options: short symlinks to them in links_dir (as podman's l/)."""
    for d in (upper, work, target):
        d.mkdir(parents=True, exist_ok=True)
    if not lower:
        empty = upper.parent / "empty"
        empty.mkdir(exist_ok=True)
        lower = [empty]
    # overlayfs stacks lowerdirs top first; image layers are given bottom first.
    dirs = [str(p) for p in reversed(lower)]
    data = f"lowerdir={':'.join(dirs)},upperdir={upper},workdir={work}"
    if len(data) > MAX_MOUNT_DATA and links_dir is not None:
        links_dir.mkdir(parents=True, exist_ok=True)
        short = []
        for layer in dirs:
            link = links_dir / hashlib.sha256(layer.encode()).hexdigest()[:10]
            if not link.is_symlink():
                with contextlib.suppress(FileExistsError):
                    link.symlink_to(layer)
            short.append(str(link))
        data = f"lowerdir={':'.join(short)},upperdir={upper},workdir={work}"
    mount("overlay", target, "overlay", 0, data)


def mount_tmpfs(target: Path, *, size: int = 64 << 20) -> None:
    target.mkdir(parents=True, exist_ok=True)
    mount("shm", target, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"mode=1777,size={size}")


def mountpoints_under(prefixes: Sequence[Path]) -> list[Path]:
    """Mount points (from /proc/self/mountinfo) inside any of `prefixes`."""
    out: list[Path] = []
    pre = [str(p).rstrip("/") + "/" for p in prefixes]
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if any(mp.startswith(p) for p in pre):
                out.append(Path(mp))
    return out
