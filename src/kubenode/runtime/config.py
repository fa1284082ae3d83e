"""Typed configuration of `kubenode runtime`, built once from the command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    socket: Path
    root: Path  # persistent: content store, snapshots, container metadata
    state: Path  # volatile (tmpfs in production): bundles, conmon sockets, exit files
    pod_cidr: str = "10.42.0.0/24"
    cni_conf_dir: Path = Path("/etc/cni/net.d")
    cni_bin_dir: Path = Path("/usr/lib/cni")
    cni_bridge: str = "kubenode0"
    stream_address: str = "127.0.0.1"
    stream_port: int = 0
    insecure_registries: tuple[str, ...] = ()
    registry_mirrors: dict[str, str] = field(default_factory=dict)
    max_layer_size: int = 10 << 30

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RuntimeConfig:
        mirrors = dict(m.split("=", 1) for m in args.registry_mirror)
        return cls(
            socket=Path(args.socket), root=Path(args.root), state=Path(args.state),
            pod_cidr=args.pod_cidr, cni_conf_dir=Path(args.cni_conf_dir),
            cni_bin_dir=Path(args.cni_bin_dir), cni_bridge=args.cni_bridge,
            stream_address=args.stream_address, stream_port=args.stream_port,
            insecure_registries=tuple(args.insecure_registry), registry_mirrors=mirrors,
            max_layer_size=args.max_layer_size,
        )
