"""What the runtime manager needs to know about the node (a slice of the kubelet config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class RuntimeManagerConfig:
    root_dir: Path
    pod_logs_dir: Path
    cgroup_root: str = "/"
    cluster_dns: list[str] = field(default_factory=list)
    cluster_domain: str = "cluster.local"
    resolv_conf: Path = Path("/etc/resolv.conf")
    pod_infra_image: str = "registry.k8s.io/pause:3.10"
    node_allocatable_cpu_milli: int = 0
    node_allocatable_memory: int = 0

    def pod_dir(self, uid: str) -> Path:
        return self.root_dir / "pods" / uid

    def pod_log_dir(self, namespace: str, name: str, uid: str) -> Path:
        return self.pod_logs_dir / f"{namespace}_{name}_{uid}"
