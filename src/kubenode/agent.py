"""`kubenode agent`: the node's agents in one process, kubelet and kube-proxy, under one
TaskGroup; SIGTERM/SIGINT stop both. kube-proxy runs only with a --kubeconfig, and uses
--kube-proxy-kubeconfig instead when given (its own identity, as `kubenode up` does)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from kubenode.kubelet.config import from_args
from kubenode.kubelet.main import run_kubelet

log = logging.getLogger(__name__)


def _proxy_runner(args: argparse.Namespace,
                  ) -> Callable[[], Coroutine[Any, Any, Any]] | None:
    """kube-proxy (`kubenode.proxy.app.ProxyServer`) from the same flags, if available."""
    try:
        app = importlib.import_module("kubenode.proxy.app")
        conf = importlib.import_module("kubenode.proxy.config")
    except ModuleNotFoundError:
        return None
    try:
        config = conf.ProxyConfig.from_args(args)
    except conf.ConfigError as err:
        log.error("kube-proxy config: %s", err)
        return None
    if args.kube_proxy_kubeconfig:
        config = dataclasses.replace(config, kubeconfig=args.kube_proxy_kubeconfig)
    server = app.ProxyServer(config)
    return lambda: server.run()


def main(args: argparse.Namespace) -> int:
    cfg = from_args(args)
    if not getattr(args, "hostname_override", None):
        args.hostname_override = cfg.node_name

    async def runner() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel if task else (lambda: None))
        with contextlib.suppress(asyncio.CancelledError):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(run_kubelet(cfg), name="kubelet")
                proxy = _proxy_runner(args)
                if proxy is not None and args.kubeconfig:
                    tg.create_task(proxy(), name="kube-proxy")
                else:
                    log.info("kube-proxy not started (no kubeconfig or not available)")

    asyncio.run(runner())
    return 0
