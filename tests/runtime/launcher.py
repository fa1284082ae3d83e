"""`python -m tests.runtime.launcher <kubenode runtime flags> [--no-images] --rootfs DIR`:
the CRI runtime server with the fake busybox image store of the tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

import grpc

from kubenode.cli import build_parser
from kubenode.cri import api_pb2_grpc as pb_grpc
from kubenode.runtime.config import RuntimeConfig
from kubenode.runtime.service import RuntimeServicer
from tests.runtime.fakeimages import FakeImageStore


async def serve(config: RuntimeConfig, rootfs: Path | None) -> None:
    images = FakeImageStore(rootfs) if rootfs else FakeImageStore(Path("/nonexistent"))
    if rootfs is None:
        images.images = []
    runtime = RuntimeServicer(config=config, images=images)
    server = grpc.aio.server()
    pb_grpc.add_RuntimeServiceServicer_to_server(runtime, server)
    if config.socket.exists():
        os.unlink(config.socket)
    server.add_insecure_port(f"unix://{config.socket}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    argv = sys.argv[1:]
    rootfs: Path | None = None
    if "--rootfs" in argv:
        i = argv.index("--rootfs")
        rootfs = Path(argv[i + 1])
        del argv[i:i + 2]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    args = build_parser().parse_args(["runtime", *argv])
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(RuntimeConfig.from_args(args), rootfs))


if __name__ == "__main__":
    main()
