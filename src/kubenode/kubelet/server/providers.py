"""The seams of the kubelet API server: small Protocols the kubelet implements.

- `PodProvider`: the pods bound to this node as the kubelet's pod manager knows them
  (v1.Pod JSON dicts, status included) and the pods the runtime is running.
- `StatsProvider`: the summary API and the snapshot the /metrics/cadvisor and
  /metrics/resource collectors render (kubenode.stats.summary.CgroupStatsProvider is one).
- `LogLocator`: (namespace, pod, container, previous) -> the CRI log file to read and a
  way to know whether the container still runs (to end `follow`). Raises `NotFound` /
  `BadRequest` with the upstream message. kubenode.kubelet.server.logs_dir.PodLogsDirLocator
  resolves from the pod logs directory alone.
- `StreamingProvider`: exec/attach/port-forward -> the runtime's streaming URL (from CRI
  Exec/Attach/PortForward), which the server proxies; `run_in_container` is CRI ExecSync.
All methods are async; none may block the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kubenode.stats.summary import StatsSnapshot


class NotFound(Exception):
    """-> 404 with this message."""


class BadRequest(Exception):
    """-> 400 with this message."""


class PodProvider(Protocol):
    async def get_pods(self) -> list[dict[str, Any]]:
        """v1.Pod objects (JSON dicts) bound to this node, for /pods."""
        ...

    async def get_running_pods(self) -> list[dict[str, Any]]:
        """Pods as the runtime reports them (metadata + spec.containers[name, image]),
        for /runningpods."""
        ...


class StatsProvider(Protocol):
    async def summary(self, *, only_cpu_and_memory: bool = False) -> dict[str, Any]: ...

    async def snapshot(self) -> StatsSnapshot: ...


@dataclass(frozen=True, kw_only=True)
class ContainerLog:
    path: str
    # None: unknown (a follow then ends only when the client goes away)
    still_running: Callable[[], Awaitable[bool]] | None = None


class LogLocator(Protocol):
    async def container_log(self, *, namespace: str, pod: str, container: str,
                            previous: bool) -> ContainerLog:
        """Raise NotFound/BadRequest with the upstream message when there is none."""
        ...


@dataclass(frozen=True, kw_only=True)
class StreamRequest:
    namespace: str
    pod: str
    uid: str | None               # from the URL's optional {uid} segment
    container: str
    command: tuple[str, ...] = ()
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    tty: bool = False
    ports: tuple[int, ...] = ()   # port-forward only


class StreamingProvider(Protocol):
    async def get_exec(self, req: StreamRequest) -> str:
        """The runtime streaming server URL for this exec (CRI ExecResponse.url)."""
        ...

    async def get_attach(self, req: StreamRequest) -> str: ...

    async def get_port_forward(self, req: StreamRequest) -> str: ...

    async def run_in_container(self, req: StreamRequest, *, exec_timeout: float) -> bytes:
        """CRI ExecSync: combined stdout+stderr of `req.command`."""
        ...
