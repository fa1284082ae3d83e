"""Wiring of the kubelet API server (kubelet/server/) to this kubelet: the PodProvider
(the pod manager's pods with the status manager's statuses, and the runtime's pods),
logs from the pod logs dir, exec/attach/port-forward over CRI, stats from cgroups via
CRI, /healthz checks (PLEG, runtime): `build_stats(cfg, kubelet)` and
`build_server(cfg, kubelet, node_ip, stats)`."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from kubenode.cri import api_pb2_grpc as pb_grpc
from kubenode.kubelet.config import KubeletConfig
from kubenode.kubelet.container import PodUID
from kubenode.kubelet.kubelet import Kubelet

log = logging.getLogger(__name__)


class KubeletPods:
    def __init__(self, kubelet: Kubelet) -> None:
        self.k = kubelet

    async def get_pods(self) -> list[dict[str, Any]]:
        out = []
        for uid, pod in self.k.pods.items():
            p = copy.deepcopy(pod)
            st = self.k.status_manager.get_pod_status(PodUID(uid))
            if st is not None:
                p["status"] = st
            out.append(p)
        return out

    async def get_running_pods(self) -> list[dict[str, Any]]:
        out = []
        for uid, (ns, name) in (await self.k.runtime_manager.list_pod_uids()).items():
            st = await self.k.runtime_manager.get_pod_status(uid, name, ns)
            out.append({"metadata": {"name": name, "namespace": ns, "uid": uid},
                        "spec": {"containers": [{"name": c.name, "image": c.image}
                                                for c in st.containers
                                                if c.state.value == "running"]}})
        return out


def _client_ca(cfg: KubeletConfig) -> str | None:
    """The cluster CA from the kubeconfig, as the client CA for x509 authentication
    (the API server talks to kubelets with a client certificate it signed)."""
    import base64

    import yaml
    assert cfg.kubeconfig is not None
    doc = yaml.safe_load(cfg.kubeconfig.read_text()) or {}
    ctx_name = doc.get("current-context")
    ctx: dict[str, Any] = next((c["context"] for c in doc.get("contexts") or []
                                if c["name"] == ctx_name), {})
    cluster: dict[str, Any] = next((c["cluster"] for c in doc.get("clusters") or []
                    if c["name"] == ctx.get("cluster")), {})
    if cluster.get("certificate-authority"):
        p = Path(cluster["certificate-authority"])
        return str(p if p.is_absolute() else cfg.kubeconfig.parent / p)
    data = cluster.get("certificate-authority-data")
    if not data:
        return None
    out = cfg.root_dir / "pki" / "client-ca.crt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(data))
    return str(out)


def build_stats(cfg: KubeletConfig, kubelet: Kubelet) -> Any:
    """The summary stats provider (cgroups + CRI), or None without a runtime connection."""
    conn = getattr(kubelet.runtime, "conn", None)
    if conn is None:
        return None
    stub = pb_grpc.RuntimeServiceStub(conn.channel)
    try:
        from kubenode.stats.cgroups import CgroupV1Reader, CgroupV2Reader
        from kubenode.stats.cri_source import CriStatsSource
        from kubenode.stats.summary import CgroupStatsProvider, NodeStatsConfig
        v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
        return CgroupStatsProvider(
            config=NodeStatsConfig(node_name=cfg.node_name, root_dir=str(cfg.root_dir)),
            source=CriStatsSource(runtime=stub, root_dir=str(cfg.root_dir),
                                  cgroup_version=2 if v2 else 1),
            cgroups=CgroupV2Reader() if v2 else CgroupV1Reader(), now=kubelet.now)
    except Exception:  # stats are optional; the kubelet runs without them
        log.exception("stats provider unavailable")
        return None


def build_server(cfg: KubeletConfig, kubelet: Kubelet, node_ip: str, stats: Any) -> Any:
    from kubenode.kubelet.server.cri_streaming import CriStreamingProvider
    from kubenode.kubelet.server.logs_dir import PodLogsDirLocator
    from kubenode.kubelet.server.server import KubeletServer, KubeletServerConfig
    from kubenode.kubelet.server.tls import ensure_self_signed  # noqa: F401  (import check)

    conn = getattr(kubelet.runtime, "conn", None)
    stub = pb_grpc.RuntimeServiceStub(conn.channel) if conn is not None else None

    async def pleg_check() -> str | None:
        ok, msg = kubelet.pleg.healthy()
        return None if ok else msg

    async def runtime_check() -> str | None:
        return ", ".join(kubelet.runtime_errors) or None

    reviewer = None
    client_ca = None
    if cfg.kubeconfig is not None:
        from kubenode.kubelet.server.auth import ApiReviewClient, connection_from_kubeconfig
        reviewer = ApiReviewClient(connection_from_kubeconfig(cfg.kubeconfig), now=kubelet.now)
        client_ca = _client_ca(cfg)
    return KubeletServer(
        config=KubeletServerConfig(node_name=cfg.node_name, port=cfg.port,
                                   healthz_port=cfg.healthz_port,
                                   cert_dir=str(cfg.root_dir / "pki"),
                                   client_ca_file=client_ca, host_names=(node_ip,),
                                   node_logs_dir=("/var/log" if cfg.enable_system_log_handler
                                                  else None)),
        authorizer=reviewer, token_reviewer=reviewer,
        now=kubelet.now, pods=KubeletPods(kubelet), stats=stats,
        logs=PodLogsDirLocator(cfg.pod_logs_dir),
        streaming=CriStreamingProvider(runtime=stub) if stub is not None else None,
        health_checks={"pleg": pleg_check, "runtime": runtime_check})
