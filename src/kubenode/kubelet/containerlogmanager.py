"""Container log rotation (upstream pkg/kubelet/logs/container_log_manager.go).

Every `monitor_interval` the manager looks at each running container's CRI log file; one
larger than `max_size` is rotated:
  1. leftovers of an interrupted round are removed (`*.tmp`, and an uncompressed file
     whose `.gz` exists);
  2. the oldest rotated files are removed until `max_files - 2` remain (the current file
     and the one being rotated make `max_files`);
  3. rotated files still uncompressed are gzipped (`<log>.<ts>` -> `<log>.<ts>.gz`,
     written to a `.tmp` first, so a crash never leaves half a file under the final name);
  4. the current file is renamed to `<log>.<YYYYmmdd-HHMMSS>` and the runtime is asked
     (CRI ReopenContainerLog) to start a new one; if it cannot, the rename is undone.
A missing log file of a running container is also fixed by ReopenContainerLog.
The log reader (`kubenode.kubelet.logs`) reads `<log>.*` oldest first by name, so the
timestamp suffix keeps the order."""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubenode.cri import api_pb2 as pb
from kubenode.cri.client import CRIError, RuntimeService

log = logging.getLogger(__name__)

COMPRESS_SUFFIX = ".gz"
TMP_SUFFIX = ".tmp"
TIMESTAMP_FORMAT = "%Y%m%d-%H%M%S"


@dataclass(kw_only=True)
class ContainerLogManager:
    runtime: RuntimeService
    max_size: int = 10 << 20
    max_files: int = 5
    monitor_interval: float = 10.0
    now: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if self.max_files < 2:
            raise ValueError(f"containerLogMaxFiles must be at least 2, got {self.max_files}")
        if self.max_size <= 0:
            raise ValueError(f"containerLogMaxSize must be positive, got {self.max_size}")

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.monitor_interval)
            try:
                await self.rotate_logs()
            except Exception:
                log.exception("container log rotation round failed")

    async def rotate_logs(self) -> None:
        running = pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING))
        for container in await self.runtime.list_containers(running):
            try:
                status = await self.runtime.container_status(container.id)
            except CRIError as err:
                log.warning("container status for log rotation failed id=%s err=%s",
                            container.id, err)
                continue
            if not status.log_path:
                continue
            path = Path(status.log_path)
            size = await asyncio.to_thread(_size, path)
            if size is None:
                # The file was removed by hand: let the runtime create it again.
                await self._reopen(container.id)
            elif size >= self.max_size:
                await self.rotate_log(container.id, path)

    async def rotate_log(self, container_id: str, path: Path) -> None:
        target = await asyncio.to_thread(self._rotate_files, path)
        if target is not None and not await self._reopen(container_id):
            await asyncio.to_thread(os.rename, target, path)

    def _rotate_files(self, path: Path) -> Path | None:
        """Steps 1-3 and the rename of step 4; the new name, or None if not renamed."""
        rotated = self._remove_excess(self._cleanup_unused(sorted(path.parent.glob(
            path.name + ".*"))))
        for old in rotated:
            if not old.name.endswith(COMPRESS_SUFFIX):
                _compress(old)
        stamp = time.strftime(TIMESTAMP_FORMAT, time.gmtime(self.now()))
        target = path.with_name(f"{path.name}.{stamp}")
        if target.exists() or target.with_name(target.name + COMPRESS_SUFFIX).exists():
            return None  # rotated this second already; the next round takes it
        os.rename(path, target)
        return target

    async def _reopen(self, container_id: str) -> bool:
        try:
            await self.runtime.reopen_container_log(container_id)
        except CRIError as err:
            log.warning("ReopenContainerLog failed id=%s err=%s", container_id, err)
            return False
        return True

    @staticmethod
    def _cleanup_unused(rotated: list[Path]) -> list[Path]:
        names = {p.name for p in rotated}
        kept: list[Path] = []
        for p in rotated:
            if p.name.endswith(TMP_SUFFIX) or (
                    not p.name.endswith(COMPRESS_SUFFIX) and p.name + COMPRESS_SUFFIX in names):
                p.unlink(missing_ok=True)
            else:
                kept.append(p)
        return kept

    def _remove_excess(self, rotated: list[Path]) -> list[Path]:
        keep = self.max_files - 2
        excess = len(rotated) - keep
        for p in rotated[:max(excess, 0)]:
            p.unlink(missing_ok=True)
        return rotated[max(excess, 0):]


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _compress(path: Path) -> None:
    tmp = path.with_name(path.name + COMPRESS_SUFFIX + TMP_SUFFIX)
    # Level 6: what upstream (Go's gzip default) writes; 9 costs twice the time.
    with path.open("rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.rename(tmp, path.with_name(path.name + COMPRESS_SUFFIX))
    path.unlink()
