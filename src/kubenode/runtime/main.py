"""`kubenode runtime`: the CRI v1 server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from kubenode.runtime.config import RuntimeConfig
from kubenode.runtime.server import serve


def main(args: argparse.Namespace) -> int:
    config = RuntimeConfig.from_args(args)
    if args.action == "check":
        from kubenode.runtime.check import main as check_main

        return check_main(config)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
    return 0
