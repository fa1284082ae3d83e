"""`kubenode server`: the control plane process (API server; scheduler and controllers
start after it when present). Runs until SIGINT/SIGTERM, then stops in reverse order."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path

from kubenode.server.apiserver.server import APIServer, ServerConfig

log = logging.getLogger(__name__)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    token_file = getattr(args, "token_auth_file", None)
    return ServerConfig(
        data_dir=Path(args.data_dir),
        bind_address=args.bind_address,
        secure_port=args.secure_port,
        storage=args.storage,
        etcd_servers=args.etcd_servers,
        service_cluster_ip_range=args.service_cluster_ip_range,
        service_node_port_range=args.service_node_port_range,
        token_auth_file=Path(token_file) if token_file else None,
        compaction_interval=float(getattr(args, "compaction_interval", 300.0) or 300.0),
        advertise_address=getattr(args, "advertise_address", "") or "",
        kubelet_certificate_authority=Path(args.kubelet_certificate_authority)
        if getattr(args, "kubelet_certificate_authority", "") else None,
        bookmark_interval=float(getattr(args, "watch_bookmark_interval", 60.0) or 60.0),
    )


async def run(config: ServerConfig, args: argparse.Namespace | None = None) -> None:
    server = APIServer(config=config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await server.start()
    print(f"kubenode server ready: https://{config.bind_address}:{server.port} "
          f"kubeconfig={server.kubeconfig_path}", flush=True)
    try:
        from kubenode.server.controllers.manager import start_control_plane
        async with start_control_plane(args, server.kubeconfig_path, server.pki.dir, stop):
            await stop.wait()
    finally:
        await server.stop()


def main(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(config, args))
    return 0
