"""Runtime-agnostic pod and container types (upstream pkg/kubelet/container, "kubecontainer").

`PodStatus` is what the runtime says about one pod UID: its sandboxes (newest first) and
every container instance it still knows (newest first per name). The kubelet turns it
into the API `v1.PodStatus` (kubelet/podstatus.py). Pods are the API's JSON objects
(`Pod = dict[str, Any]`), shared read-only between components.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, NewType

Pod = dict[str, Any]
PodUID = NewType("PodUID", str)


class ContainerState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


@dataclass(kw_only=True)
class ContainerStatus:
    id: str
    name: str
    state: ContainerState
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    exit_code: int = 0
    image: str = ""
    image_ref: str = ""
    hash: str = ""
    restart_count: int = 0
    sandbox_id: str = ""
    reason: str = ""
    message: str = ""


@dataclass(kw_only=True)
class SandboxStatus:
    id: str
    ready: bool
    attempt: int
    created_at: float
    ips: list[str] = field(default_factory=list)
    host_network: bool = False


@dataclass(kw_only=True)
class PodStatus:
    uid: PodUID
    name: str
    namespace: str
    sandboxes: list[SandboxStatus] = field(default_factory=list)
    containers: list[ContainerStatus] = field(default_factory=list)

    @property
    def ips(self) -> list[str]:
        for sb in self.sandboxes:
            if sb.ready:
                return sb.ips
        return []

    def latest(self, name: str) -> ContainerStatus | None:
        for c in self.containers:
            if c.name == name:
                return c
        return None

    def instances(self, name: str) -> list[ContainerStatus]:
        return [c for c in self.containers if c.name == name]


def pod_uid(pod: Pod) -> PodUID:
    return PodUID(pod["metadata"]["uid"])


def pod_full_name(pod: Pod) -> str:
    return f"{pod['metadata']['name']}_{pod['metadata'].get('namespace', 'default')}"


def container_hash(container: dict[str, Any]) -> str:
    """A stable hash of the fields whose change restarts a container."""
    relevant = {k: v for k, v in container.items() if k not in ("resources",)}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:8]


def is_restartable_init(container: dict[str, Any]) -> bool:
    """A native sidecar: an init container with restartPolicy Always."""
    return container.get("restartPolicy") == "Always"
