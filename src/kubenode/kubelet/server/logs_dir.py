"""A `LogLocator` that resolves container logs from the pod logs directory alone.

Layout (upstream): <pod-logs-dir>/<namespace>_<pod>_<uid>/<container>/<restart>.log.
The current log is the highest <restart>; `previous` is the next lower one. When several
pod directories match (a pod re-created with a new UID), the most recently modified wins.
Messages are upstream's: 'pod "x" does not exist' (404), 'container "c" not found in pod
"x"' (404), 'previous terminated container "c" in pod "x" not found' (400).
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from kubenode.kubelet.server.providers import BadRequest, ContainerLog, NotFound

RunningCheck = Callable[[str, str, str], Awaitable[bool]]


_LOG_NAME = re.compile(r"^(\d+)\.log(?:\..+)?$")


class PodLogsDirLocator:
    def __init__(self, pod_logs_dir: str | os.PathLike[str], *,
                 is_running: RunningCheck | None = None) -> None:
        self.root = Path(pod_logs_dir)
        self._is_running = is_running

    def _pod_dir(self, namespace: str, pod: str) -> Path:
        prefix = f"{namespace}_{pod}_"
        try:
            found = [Path(e.path) for e in os.scandir(self.root)
                     if e.is_dir() and e.name.startswith(prefix)
                     and "_" not in e.name[len(prefix):]]
        except FileNotFoundError:
            found = []
        if not found:
            raise NotFound(f'pod "{pod}" does not exist')
        return max(found, key=lambda p: p.stat().st_mtime)

    async def container_log(self, *, namespace: str, pod: str, container: str,
                            previous: bool) -> ContainerLog:
        cdir = self._pod_dir(namespace, pod) / container
        if not cdir.is_dir():
            raise NotFound(f'container "{container}" not found in pod "{pod}"')
        # <restart>.log, or only its rotated files for the moment rotation has moved it
        # away and the runtime has not reopened it yet
        restarts = sorted({int(m.group(1)) for n in os.listdir(cdir)
                           if (m := _LOG_NAME.match(n))})
        if previous:
            if len(restarts) < 2:
                raise BadRequest(
                    f'previous terminated container "{container}" in pod "{pod}" not found')
            return ContainerLog(path=str(cdir / f"{restarts[-2]}.log"), still_running=None)
        if not restarts:
            raise NotFound(f'container "{container}" not found in pod "{pod}"')
        running = None
        if self._is_running is not None:
            check = self._is_running

            async def running_fn() -> bool:
                return await check(namespace, pod, container)
            running = running_fn
        return ContainerLog(path=str(cdir / f"{restarts[-1]}.log"), still_running=running)
