"""Atomic writer (upstream pkg/volume/util/atomic_writer.go): a volume directory whose
files appear and change all at once.

    <dir>/..2024_01_01_00_00_00.123456789/<paths>   the payload of one version
    <dir>/..data -> ..2024_...                        swapped with rename(2)
    <dir>/<top-level name> -> ..data/<top-level name> user-visible symlinks

Writing a new payload: write a fresh timestamped dir, point a temp symlink at it, rename
it over ..data, fix the top-level symlinks, remove the old timestamped dir. A reader
never sees a half-written set. Unchanged payloads are not rewritten.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

DATA = "..data"


@dataclass(frozen=True, kw_only=True)
class FileProjection:
    data: bytes
    mode: int = 0o644


def _current(d: Path) -> dict[str, FileProjection] | None:
    link = d / DATA
    if not link.is_symlink():
        return None
    target = d / os.readlink(link)
    out: dict[str, FileProjection] = {}
    for p in target.rglob("*"):
        if p.is_file():
            out[str(p.relative_to(target))] = FileProjection(data=p.read_bytes(),
                                                             mode=p.stat().st_mode & 0o7777)
    return out


def write(d: Path, payload: dict[str, FileProjection]) -> bool:
    """Make `d` hold exactly `payload`. Returns True if anything changed."""
    for rel in payload:
        if os.path.isabs(rel) or ".." in Path(rel).parts or rel.startswith(".."):
            raise ValueError(f"invalid path {rel!r}")
    d.mkdir(parents=True, exist_ok=True)
    if _current(d) == payload:
        return False
    ts = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    new = d / ts
    new.mkdir()
    for rel, fp in payload.items():
        p = new / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(fp.data)
        p.chmod(fp.mode)
    new.chmod(0o755)
    old_target = os.readlink(d / DATA) if (d / DATA).is_symlink() else None
    tmp = d / "..data_tmp"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(ts, tmp)
    os.rename(tmp, d / DATA)
    tops = {Path(rel).parts[0] for rel in payload}
    for top in tops:
        link = d / top
        if not link.is_symlink():
            if link.exists():
                shutil.rmtree(link) if link.is_dir() else link.unlink()
            os.symlink(f"{DATA}/{top}", link)
    for entry in d.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.is_symlink() and entry.name not in tops:
            entry.unlink()
    if old_target and old_target != ts:
        shutil.rmtree(d / old_target, ignore_errors=True)
    return True
