"""The gRPC server of `kubenode runtime`: CRI v1 ImageService and RuntimeService on a
unix socket. Lifecycle: build services -> listen -> serve until cancelled -> stop with grace."""

from __future__ import annotations

import asyncio
import logging
import os

import grpc

from kubenode.cri import api_pb2_grpc as pb_grpc
from kubenode.runtime.config import RuntimeConfig
from kubenode.runtime.images.registry import RegistryClient, RegistryHosts
from kubenode.runtime.images.service import ImageServicer
from kubenode.runtime.images.store import ImageStore
from kubenode.runtime.service import RuntimeServicer
from kubenode.runtime.streaming import new_streaming_server

log = logging.getLogger(__name__)


async def serve(config: RuntimeConfig, *, ready: asyncio.Event | None = None) -> None:
    for d in (config.root, config.state, config.socket.parent):
        d.mkdir(parents=True, exist_ok=True)
    images = ImageStore(config.root, max_layer_size=config.max_layer_size)
    images.start()
    registry = RegistryClient(hosts=RegistryHosts(
        insecure=config.insecure_registries, mirrors=dict(config.registry_mirrors)))
    runtime = RuntimeServicer(config=config, images=images)
    image_service = ImageServicer(store=images, client=registry, in_use=runtime.image_in_use)
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", 16 << 20),
        ("grpc.max_send_message_length", 16 << 20),
    ])
    pb_grpc.add_RuntimeServiceServicer_to_server(runtime, server)
    pb_grpc.add_ImageServiceServicer_to_server(image_service, server)
    if config.socket.exists():
        os.unlink(config.socket)
    server.add_insecure_port(f"unix://{config.socket}")
    streaming = new_streaming_server(config=config, servicer=runtime)
    await streaming.start()
    runtime.streaming = streaming
    await server.start()
    log.info("CRI server listening socket=%s", config.socket)
    if ready is not None:
        ready.set()
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(grace=2)
        await streaming.stop()
        await registry.close()
        images.close()
