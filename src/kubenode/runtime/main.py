"""`kubenode runtime`: the CRI v1 server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from kubenode.runtime.config import RuntimeConfig
from kubenode.runtime.server import serve


def main(args: argparse.Namespace) -> int:
    config = RuntimeConfig.from_args(args)
    if args.action == "check":
        from kubenode.runtime.check import main as check_main

        return check_main(config)
    if sys.version_info < (3, 12):
        # Python 3.11's default watcher starts a thread per child (runc, conmon, CNI
        # plugins: several per pod); a pidfd is what 3.12 uses by default
        asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))
    return 0
