"""Kubelet configuration: a typed `KubeletConfig` built from a KubeletConfiguration file
(kubelet.config.k8s.io/v1beta1, YAML) overlaid by command-line flags, as upstream
(flags given explicitly win). Unknown fields in the file are logged as warnings.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubenode.api.quantity import int_value, milli_value
from kubenode.kubelet.eviction import DEFAULT_HARD, parse_flag, parse_thresholds

log = logging.getLogger(__name__)

API_VERSION = "kubelet.config.k8s.io/v1beta1"

# KubeletConfiguration field -> KubeletConfig attribute (the fields we honour)
_FIELDS = {
    "clusterDNS": "cluster_dns",
    "clusterDomain": "cluster_domain",
    "staticPodPath": "pod_manifest_path",
    "podLogsDir": "pod_logs_dir",
    "cgroupRoot": "cgroup_root",
    "resolvConf": "resolv_conf",
    "maxPods": "max_pods",
    "nodeStatusUpdateFrequency": "node_status_update_frequency",
    "nodeStatusReportFrequency": "node_status_report_frequency",
    "nodeLeaseDurationSeconds": "node_lease_duration_seconds",
    "syncFrequency": "sync_frequency",
    "fileCheckFrequency": "file_check_frequency",
    "kubeReserved": "kube_reserved",
    "systemReserved": "system_reserved",
    "podInfraContainerImage": "pod_infra_image",
    "containerRuntimeEndpoint": "container_runtime_endpoint",
    "port": "port",
    "healthzPort": "healthz_port",
    "providerID": "provider_id",
    "registerNode": "register_node",
    "podCIDR": "pod_cidr",
    "containerLogMaxSize": "container_log_max_size",
    "containerLogMaxFiles": "container_log_max_files",
    "containerLogMonitorInterval": "container_log_monitor_interval",
    "registerWithTaints": "register_with_taints",
    "enableSystemLogHandler": "enable_system_log_handler",
    "rotateCertificates": "rotate_certificates",
    "evictionHard": "eviction_hard",
    "evictionPressureTransitionPeriod": "eviction_pressure_transition_period",
}
_IGNORED = {"apiVersion", "kind", "authentication", "authorization", "cgroupDriver",
            "address", "readOnlyPort", "serializeImagePulls",
            "featureGates", "failSwapOn", "serverTLSBootstrap",
            "tlsCertFile", "tlsPrivateKeyFile", "healthzBindAddress", "runtimeRequestTimeout",
            "imageMinimumGCAge", "imageGCHighThresholdPercent", "imageGCLowThresholdPercent",
            "logging", "shutdownGracePeriod",
            "shutdownGracePeriodCriticalPods", "streamingConnectionIdleTimeout",
            "volumeStatsAggPeriod", "cpuManagerReconcilePeriod", "memorySwap"}


def parse_duration(v: Any) -> float:
    """Go durations: "10s", "1m0s", "500ms", "1h"."""
    if isinstance(v, int | float):
        return float(v)
    s = str(v).strip()
    total = 0.0
    num = ""
    i = 0
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "ns": 1e-9}
    while i < len(s):
        ch = s[i]
        if ch.isdigit() or ch == ".":
            num += ch
            i += 1
            continue
        unit = s[i:i + 2] if s[i:i + 2] in ("ms", "us", "ns") else ch
        if unit not in units or not num:
            raise ValueError(f"time: invalid duration {s!r}")
        total += float(num) * units[unit]
        num = ""
        i += len(unit)
    if num:
        raise ValueError(f"time: missing unit in duration {s!r}")
    return total


@dataclass(kw_only=True)
class KubeletConfig:
    node_name: str
    kubeconfig: Path | None = None
    bootstrap_kubeconfig: Path | None = None
    cert_dir: Path | None = None  # default <root-dir>/pki
    rotate_certificates: bool = False  # renew the bootstrapped client certificate
    eviction_hard: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_HARD))
    eviction_pressure_transition_period: float = 300.0
    container_runtime_endpoint: str = "unix:///run/kubenode/runtime.sock"
    root_dir: Path = Path("/var/lib/kubelet")
    pod_logs_dir: Path = Path("/var/log/pods")
    pod_manifest_path: Path | None = None
    cgroup_root: str = "/"
    cluster_dns: list[str] = field(default_factory=lambda: ["10.43.0.10"])
    cluster_domain: str = "cluster.local"
    resolv_conf: Path = Path("/etc/resolv.conf")
    max_pods: int = 110
    node_status_update_frequency: float = 10.0
    node_status_report_frequency: float = 300.0
    node_lease_duration_seconds: int = 40
    sync_frequency: float = 60.0
    file_check_frequency: float = 20.0
    housekeeping_period: float = 2.0
    kube_reserved: dict[str, str] = field(default_factory=dict)
    system_reserved: dict[str, str] = field(default_factory=dict)
    pod_infra_image: str = "registry.k8s.io/pause:3.10"
    port: int = 10250
    healthz_port: int = 10248
    node_ip: str = ""
    provider_id: str = ""
    register_node: bool = True
    pod_cidr: str = ""
    node_labels: dict[str, str] = field(default_factory=dict)
    register_with_taints: list[dict[str, str]] = field(default_factory=list)
    container_log_max_size: int = 10 << 20
    container_log_max_files: int = 5
    container_log_monitor_interval: float = 10.0
    enable_system_log_handler: bool = True   # /logs/ serves /var/log

    def reserved(self) -> dict[str, int]:
        """Reserved cpu (millicores), memory, ephemeral-storage, summed."""
        out: dict[str, int] = {}
        for src in (self.kube_reserved, self.system_reserved):
            for k, v in src.items():
                out[k] = out.get(k, 0) + (milli_value(v) if k == "cpu" else int_value(v))
        return out


TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _taint(t: dict[str, Any]) -> dict[str, str]:
    if not isinstance(t, dict) or not t.get("key") or t.get("effect") not in TAINT_EFFECTS:
        raise ValueError(f"registerWithTaints: invalid taint {t!r}")
    out = {"key": str(t["key"]), "effect": str(t["effect"])}
    if t.get("value"):
        out["value"] = str(t["value"])
    return out


def parse_taint(spec: str) -> dict[str, str]:
    """--register-with-taints syntax: key[=value]:Effect (as `kubectl taint`)."""
    kv, sep, effect = spec.rpartition(":")
    if not sep:
        raise ValueError(f"invalid taint spec {spec!r}: want key[=value]:Effect")
    key, _, value = kv.partition("=")
    return _taint({"key": key, "value": value, "effect": effect})


def load_file(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text()) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a KubeletConfiguration object")
    if doc.get("kind", "KubeletConfiguration") != "KubeletConfiguration":
        raise ValueError(f"{path}: kind {doc.get('kind')!r} is not KubeletConfiguration")
    if doc.get("apiVersion", API_VERSION) != API_VERSION:
        raise ValueError(f"{path}: apiVersion {doc.get('apiVersion')!r} is not {API_VERSION}")
    return doc


def apply_file(cfg: KubeletConfig, doc: dict[str, Any]) -> None:
    for k, v in doc.items():
        attr = _FIELDS.get(k)
        if attr is None:
            if k not in _IGNORED:
                log.warning("unknown field in KubeletConfiguration field=%s", k)
            continue
        if attr in ("node_status_update_frequency", "node_status_report_frequency",
                    "sync_frequency", "file_check_frequency", "container_log_monitor_interval",
                    "eviction_pressure_transition_period"):
            v = parse_duration(v)
        elif attr in ("pod_manifest_path", "pod_logs_dir", "resolv_conf"):
            v = Path(v) if v else None
        elif attr == "cluster_dns":
            v = list(v or [])
        elif attr == "container_log_max_size":
            v = int_value(str(v))
        elif attr == "eviction_hard":
            v = {str(k): str(x) for k, x in (v or {}).items()}
            parse_thresholds(v)  # an invalid threshold is a configuration error
        elif attr in ("enable_system_log_handler", "rotate_certificates"):
            v = bool(v)
        elif attr == "register_with_taints":
            v = [_taint(t) for t in v or []]
        setattr(cfg, attr, v)


def from_args(args: argparse.Namespace) -> KubeletConfig:
    cfg = KubeletConfig(node_name=args.node_name)
    if getattr(args, "config", None):
        apply_file(cfg, load_file(Path(args.config)))
    defaults = {"root_dir": "/var/lib/kubelet", "pod_logs_dir": "/var/log/pods",
                "container_runtime_endpoint": "unix:///run/kubenode/runtime.sock",
                "port": 10250, "healthz_port": 10248}
    for attr, default in defaults.items():
        v = getattr(args, attr, None)
        if v is not None and (v != default or not getattr(args, "config", None)):
            setattr(cfg, attr, Path(v) if attr in ("root_dir", "pod_logs_dir") else v)
    if getattr(args, "kubeconfig", None):
        cfg.kubeconfig = Path(args.kubeconfig)
    if getattr(args, "bootstrap_kubeconfig", None):
        cfg.bootstrap_kubeconfig = Path(args.bootstrap_kubeconfig)
    if getattr(args, "cert_dir", None):
        cfg.cert_dir = Path(args.cert_dir)
    if getattr(args, "rotate_certificates", False):
        cfg.rotate_certificates = True
    if getattr(args, "eviction_hard", None):
        cfg.eviction_hard = parse_flag(args.eviction_hard)
        parse_thresholds(cfg.eviction_hard)
    if getattr(args, "pod_manifest_path", None):
        cfg.pod_manifest_path = Path(args.pod_manifest_path)
    for attr in ("cgroup_root", "cluster_domain", "node_ip", "pod_infra_image", "provider_id"):
        v = getattr(args, attr, None)
        if v:
            setattr(cfg, attr, v)
    if getattr(args, "cluster_dns", None):
        cfg.cluster_dns = [s for s in args.cluster_dns.split(",") if s]
    if getattr(args, "node_labels", None):
        for kv in args.node_labels.split(","):
            k, _, v = kv.partition("=")
            if k:
                cfg.node_labels[k] = v
    if getattr(args, "kubelet_pod_cidr", None):
        cfg.pod_cidr = args.kubelet_pod_cidr
    for attr in ("file_check_frequency", "node_status_update_frequency"):
        if getattr(args, attr, None):
            setattr(cfg, attr, float(getattr(args, attr)))
    if getattr(args, "resolv_conf", None):
        cfg.resolv_conf = Path(args.resolv_conf)
    if getattr(args, "max_pods", None):
        cfg.max_pods = int(args.max_pods)
    if getattr(args, "container_log_max_size", None):
        cfg.container_log_max_size = int_value(args.container_log_max_size)
    if getattr(args, "container_log_max_files", None):
        cfg.container_log_max_files = int(args.container_log_max_files)
    if getattr(args, "register_with_taints", None):
        cfg.register_with_taints = [parse_taint(s) for s in args.register_with_taints.split(",")
                                    if s]
    if getattr(args, "kube_reserved", None):
        cfg.kube_reserved = dict(kv.split("=", 1) for kv in args.kube_reserved.split(","))
    if getattr(args, "system_reserved", None):
        cfg.system_reserved = dict(kv.split("=", 1) for kv in args.system_reserved.split(","))
    return cfg
