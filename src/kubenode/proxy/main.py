"""`kubenode proxy`: kube-proxy alone (flags as upstream where they exist)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging

from kubenode.proxy.app import ProxyServer, cleanup
from kubenode.proxy.config import ConfigError, ProxyConfig

log = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> int:
    try:
        config = ProxyConfig.from_args(args)
    except ConfigError as err:
        log.error("%s", err)
        return 1
    if config.cleanup:
        asyncio.run(cleanup(config))
        return 0
    if not config.kubeconfig:
        log.error("kube-proxy needs --kubeconfig (or clientConnection.kubeconfig in "
                  "--proxy-config)")
        return 1
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(ProxyServer(config).run())
    return 0
