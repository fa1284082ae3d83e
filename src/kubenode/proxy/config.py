"""kube-proxy configuration: flags and a KubeProxyConfiguration file
(kubeproxy.config.k8s.io/v1alpha1). Flags given explicitly on the command line win over
the file, as upstream; the file wins over flag defaults."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

API_VERSION = "kubeproxy.config.k8s.io/v1alpha1"
KIND = "KubeProxyConfiguration"


_FLAG_DEFAULTS: dict[str, Any] = {"healthz_bind_address": "0.0.0.0:10256",
                                  "metrics_bind_address": "127.0.0.1:10249",
                                  "mode": "nftables"}


class ConfigError(ValueError):
    pass


def parse_duration(value: Any) -> float:
    """A Go duration ("1s", "30s", "1m0s", "500ms", "1h") or a number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "µs": 1e-6,
             "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"invalid duration {value!r}")
    return sum(float(n) * units[u] for n, u in parts)


def _host_port(value: str, default_port: int) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value, default_port
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    mode: str = "nftables"
    kubeconfig: str | None = None
    hostname_override: str = ""
    cluster_cidr: str | None = None
    service_cidrs: list[str] = field(default_factory=list)
    healthz_bind_address: str = "0.0.0.0:10256"
    metrics_bind_address: str = "127.0.0.1:10249"
    min_sync_period: float = 1.0
    sync_period: float = 30.0
    masquerade_all: bool = False
    nft_table: str = "kubenode"
    iptables_chain_prefix: str = "KUBE"
    health_check_bind_address: str = "0.0.0.0"
    conntrack: bool = True
    cleanup: bool = False

    @property
    def healthz(self) -> tuple[str, int]:
        return _host_port(self.healthz_bind_address, 10256)

    @property
    def metrics(self) -> tuple[str, int]:
        return _host_port(self.metrics_bind_address, 10249)

    @classmethod
    def from_file(cls, path: str | Path, base: ProxyConfig | None = None) -> ProxyConfig:
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read {path}: {err}") from err
        if doc.get("kind", KIND) != KIND or doc.get("apiVersion", API_VERSION) != API_VERSION:
            raise ConfigError(f"{path}: expected {API_VERSION} {KIND}, got "
                              f"{doc.get('apiVersion')} {doc.get('kind')}")
        cfg = base or cls()
        updates: dict[str, Any] = {}
        if doc.get("mode"):
            updates["mode"] = doc["mode"]
        if (doc.get("clientConnection") or {}).get("kubeconfig"):
            updates["kubeconfig"] = doc["clientConnection"]["kubeconfig"]
        for key, attr in (("hostnameOverride", "hostname_override"),
                          ("clusterCIDR", "cluster_cidr"),
                          ("healthzBindAddress", "healthz_bind_address"),
                          ("metricsBindAddress", "metrics_bind_address")):
            if doc.get(key):
                updates[attr] = doc[key]
        mode = updates.get("mode", cfg.mode)
        section = doc.get(mode) or {}
        if "minSyncPeriod" in section:
            updates["min_sync_period"] = parse_duration(section["minSyncPeriod"])
        if "syncPeriod" in section:
            updates["sync_period"] = parse_duration(section["syncPeriod"])
        if "masqueradeAll" in section:
            updates["masquerade_all"] = bool(section["masqueradeAll"])
        if mode not in ("nftables", "iptables"):
            raise ConfigError(f'unsupported proxy mode "{mode}" (nftables, iptables)')
        return replace(cfg, **updates)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ProxyConfig:
        names = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {}
        for attr in names:
            flag = "proxy_mode" if attr == "mode" else attr
            if getattr(args, flag, None) is not None:
                kw[attr] = getattr(args, flag)
        for attr in ("sync_period", "min_sync_period"):
            if isinstance(kw.get(attr), str):
                kw[attr] = parse_duration(kw[attr])
        if isinstance(kw.get("service_cidrs"), str):
            kw["service_cidrs"] = [c for c in kw["service_cidrs"].split(",") if c]
        if not kw.get("hostname_override"):
            kw["hostname_override"] = getattr(args, "node_name", "") or ""
        if not getattr(args, "proxy_config", None):
            return cls(**kw)
        # flags win over the file when set to something other than their default
        file_cfg = cls.from_file(args.proxy_config)
        defaults = cls()
        return replace(file_cfg, **{k: v for k, v in kw.items()
                                    if k != "hostname_override" and v != getattr(defaults, k)
                                    and v != _FLAG_DEFAULTS.get(k)})
