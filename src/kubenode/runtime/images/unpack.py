"""Safe layer unpack: one layer tar (plain, gzip or zstd) into one fresh snapshot dir,
usable as an overlayfs lowerdir.

Contract:
- OCI whiteouts become overlayfs whiteouts: `.wh.<name>` -> char device 0:0 `<name>`,
  `.wh..wh..opq` -> xattr trusted.overlay.opaque=y on the directory.
- Regular files, dirs, symlinks, hardlinks, FIFOs keep mode (setuid too), uid/gid, mtime
  and xattrs (PAX SCHILY.xattr.*).
- Every path is resolved component by component from the snapshot's root with
  O_NOFOLLOW|O_DIRECTORY dir fds (openat style): nothing is ever written outside it.
- Refused with `UnsafeLayer` naming the entry: absolute names, `..` components, writing
  through a symlink, hardlinks to anything not already in this layer, device nodes
  (unless allow_devices), decompressed size over max_size. On any error the snapshot dir
  is removed entirely (no partial snapshot)."""

from __future__ import annotations

import errno
import gzip
import hashlib
import logging
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)
WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
_XATTR_PAX = "SCHILY.xattr."
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class UnpackError(Exception):
    """The layer could not be unpacked (message names the entry); nothing was kept."""


class UnsafeLayer(UnpackError):
    """The layer holds an entry that would escape or abuse the snapshot; nothing was kept."""


class LayerTooLarge(UnsafeLayer):
    """The layer decompresses to more bytes than allowed."""


@dataclass(frozen=True, kw_only=True)
class UnpackResult:
    diff_id: str  # sha256 of the uncompressed tar stream
    size: int  # uncompressed bytes


class _CountingReader:
    """Read-only stream that hashes and counts what passes and stops past a limit."""

    def __init__(self, inner: IO[bytes], *, limit: int, name: str) -> None:
        self._inner = inner
        self._limit = limit
        self._name = name
        self.count = 0
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n if n is not None and n >= 0 else 1 << 20)
        self.count += len(data)
        if self.count > self._limit:
            raise LayerTooLarge(f"layer {self._name} decompresses to more than "
                                f"{self._limit} bytes (max layer size)")
        self.sha.update(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


@contextmanager
def _decompressed(blob: Path) -> Iterator[Any]:
    with blob.open("rb") as raw:
        magic = raw.read(4)
        raw.seek(0)
        if magic.startswith(_GZIP_MAGIC):
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield gz
        elif magic == _ZSTD_MAGIC:
            import zstandard

            with zstandard.ZstdDecompressor().stream_reader(raw) as zr:
                yield zr
        else:
            yield raw


def _components(name: str, *, what: str) -> list[str]:
    if name.startswith("/"):
        raise UnsafeLayer(f"{what} {name!r}: absolute path refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeLayer(f"{what} {name!r}: '..' path component refused")
    return parts


class _Unpacker:
    def __init__(self, root: Path, *, allow_devices: bool, chown: bool, max_size: int,
                 label: str) -> None:
        self.root = root
        self.max_size = max_size
        self.label = label
        self.written = 0  # file bytes written (sparse entries expand: count what lands)
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        self.allow_devices = allow_devices
        self.chown = chown
        self.dirs: list[tuple[list[str], tarfile.TarInfo]] = []

    def close(self) -> None:
        os.close(self.root_fd)

    def open_dir(self, parts: list[str], *, create: bool, entry: str) -> int:
        """Open root/parts as a dir fd, refusing symlinks on the way (openat walk)."""
        fd = os.dup(self.root_fd)
        try:
            for i, comp in enumerate(parts):
                try:
                    nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                  dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise UnsafeLayer(f"entry {entry!r}: {'/'.join(parts[:i + 1])!r} "
                                          "does not exist in this layer") from None
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                  dir_fd=fd)
                except OSError as err:
                    if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    st = os.stat(comp, dir_fd=fd, follow_symlinks=False)
                    where = "/".join(parts[:i + 1])
                    if stat.S_ISLNK(st.st_mode):
                        raise UnsafeLayer(f"entry {entry!r}: refused to write through "
                                          f"symlink {where!r}") from None
                    raise UnsafeLayer(f"entry {entry!r}: {where!r} is not a "
                                      "directory") from None
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _clear(self, dfd: int, name: str, *, keep_dir: bool) -> bool:
        """Remove what sits at name (never following it). True if a dir was kept."""
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            # dfd was reached without following symlinks; rmtree never follows them
            remove_tree(Path(os.readlink(f"/proc/self/fd/{dfd}")) / name)
            return False
        os.unlink(name, dir_fd=dfd)
        return False

    def _owner(self, m: tarfile.TarInfo, name: str, dfd: int) -> None:
        if self.chown:
            os.chown(name, m.uid, m.gid, dir_fd=dfd, follow_symlinks=False)

    def _xattrs(self, m: tarfile.TarInfo, fd: int) -> None:
        for key, value in m.pax_headers.items():
            if not key.startswith(_XATTR_PAX):
                continue
            name = key[len(_XATTR_PAX):]
            if name.startswith("trusted."):
                # trusted.overlay.* would steer overlayfs (opaque, redirect, metacopy): only
                # whiteout conversion may set those, never the image
                log.warning("ignoring xattr %s on layer entry %r", name, m.name)
                continue
            os.setxattr(fd, name, value.encode("utf-8", "surrogateescape"))

    def entry(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = _components(m.name, what="entry")
        if not parts:
            return  # the root itself
        base = parts[-1]
        dfd = self.open_dir(parts[:-1], create=True, entry=m.name)
        try:
            if base == OPAQUE_WHITEOUT:
                os.setxattr(dfd, OVERLAY_OPAQUE_XATTR, b"y")
                return
            if base.startswith(WHITEOUT_PREFIX):
                target = base[len(WHITEOUT_PREFIX):]
                if not target or target in (".", ".."):
                    raise UnsafeLayer(f"entry {m.name!r}: bad whiteout")
                self._clear(dfd, target, keep_dir=False)
                os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=dfd)
                return
            if m.isdir():
                if not self._clear(dfd, base, keep_dir=True):
                    os.mkdir(base, 0o700, dir_fd=dfd)
                self.dirs.append((parts, m))
                return
            self._clear(dfd, base, keep_dir=False)
            if m.isreg():
                self._file(tar, m, dfd, base)
            elif m.issym():
                os.symlink(m.linkname, base, dir_fd=dfd)
                self._owner(m, base, dfd)
                os.utime(base, (m.mtime, m.mtime), dir_fd=dfd, follow_symlinks=False)
            elif m.islnk():
                self._hardlink(m, dfd, base)
            elif m.isfifo():
                os.mkfifo(base, 0o600, dir_fd=dfd)
                self._owner(m, base, dfd)
                os.chmod(base, m.mode & 0o7777, dir_fd=dfd)
            elif m.ischr() or m.isblk():
                if not self.allow_devices:
                    raise UnsafeLayer(f"entry {m.name!r}: device node refused")
                kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
                os.mknod(base, kind | (m.mode & 0o777), os.makedev(m.devmajor, m.devminor),
                         dir_fd=dfd)
                self._owner(m, base, dfd)
            else:
                raise UnsafeLayer(f"entry {m.name!r}: unsupported tar entry type {m.type!r}")
        finally:
            os.close(dfd)

    def _file(self, tar: tarfile.TarFile, m: tarfile.TarInfo, dfd: int, base: str) -> None:
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                     dir_fd=dfd)
        try:
            src = tar.extractfile(m)
            if src is not None:
                while chunk := src.read(1 << 20):
                    self.written += len(chunk)
                    if self.written > self.max_size:
                        raise LayerTooLarge(f"layer {self.label} unpacks to more than "
                                            f"{self.max_size} bytes (max layer size) at entry "
                                            f"{m.name!r}")
                    _write_all(fd, chunk)
            if self.chown:
                os.fchown(fd, m.uid, m.gid)
            os.fchmod(fd, m.mode & 0o7777)  # after chown: chown clears setuid
            self._xattrs(m, fd)
            os.utime(fd, (m.mtime, m.mtime))
        finally:
            os.close(fd)

    def _hardlink(self, m: tarfile.TarInfo, dfd: int, base: str) -> None:
        target = _components(m.linkname, what=f"hardlink {m.name!r} ->")
        if not target:
            raise UnsafeLayer(f"entry {m.name!r}: hardlink to the root refused")
        sfd = self.open_dir(target[:-1], create=False, entry=m.name)
        try:
            try:
                st = os.stat(target[-1], dir_fd=sfd, follow_symlinks=False)
            except FileNotFoundError:
                raise UnsafeLayer(f"entry {m.name!r}: hardlink target {m.linkname!r} is not "
                                  "in this layer") from None
            if stat.S_ISDIR(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                raise UnsafeLayer(f"entry {m.name!r}: hardlink to {m.linkname!r} refused")
            os.link(target[-1], base, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
        finally:
            os.close(sfd)

    def finish_dirs(self) -> None:
        for parts, m in reversed(self.dirs):
            try:
                fd = self.open_dir(parts, create=False, entry=m.name)
            except UnsafeLayer:
                continue  # replaced by a later entry
            try:
                if self.chown:
                    os.fchown(fd, m.uid, m.gid)
                os.fchmod(fd, m.mode & 0o7777)
                self._xattrs(m, fd)
                os.utime(fd, (m.mtime, m.mtime))
            finally:
                os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def unpack_layer(blob: Path, dest: Path, *, max_size: int, allow_devices: bool = False,
                 name: str = "") -> UnpackResult:
    """Unpack blob into dest (created here, must not exist). Blocking: run in a thread."""
    dest.mkdir(mode=0o755)
    label = name or blob.name
    try:
        unpacker = _Unpacker(dest, allow_devices=allow_devices, chown=os.geteuid() == 0,
                             max_size=max_size, label=label)
        try:
            with _decompressed(blob) as stream:
                reader = _CountingReader(stream, limit=max_size, name=label)
                try:
                    with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                        for member in tar:
                            try:
                                unpacker.entry(tar, member)
                            except OSError as err:
                                raise UnpackError(f"layer {label}: entry {member.name!r}: "
                                                  f"{err.strerror or err}") from err
                except tarfile.TarError as err:
                    raise UnsafeLayer(f"layer {label} is not a valid tar archive: {err}") from None
                reader.drain()
            unpacker.finish_dirs()
        finally:
            unpacker.close()
        os.chmod(dest, 0o755)
        return UnpackResult(diff_id="sha256:" + reader.sha.hexdigest(), size=reader.count)
    except BaseException:
        remove_tree(dest)
        raise


def remove_tree(path: Path) -> None:
    """rmtree that never follows symlinks and copes with read-only dirs."""
    def onerror(func: Any, p: str, exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(p), 0o700)
            func(p)
        except OSError:
            pass
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, onerror=onerror)
