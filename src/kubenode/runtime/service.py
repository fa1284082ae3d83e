"""CRI RuntimeService of `kubenode runtime`: sandboxes, containers, streaming, stats.

Methods not built yet answer UNIMPLEMENTED (the generated base class does that)."""

from __future__ import annotations

import grpc

from kubenode import __version__
from kubenode.cri import api_pb2 as pb
from kubenode.cri import api_pb2_grpc as pb_grpc
from kubenode.runtime.config import RuntimeConfig
from kubenode.runtime.images.store import ImageStore

RUNTIME_NAME = "kubenode"
CRI_API_VERSION = "v1"


class RuntimeServicer(pb_grpc.RuntimeServiceServicer):
    def __init__(self, *, config: RuntimeConfig, images: ImageStore | None = None) -> None:
        self._config = config
        self.images = images

    def image_in_use(self, image_id: str) -> bool:
        """Whether any container was created from this image (RemoveImage refuses then)."""
        return False

    async def Version(
        self, request: pb.VersionRequest, context: grpc.aio.ServicerContext
    ) -> pb.VersionResponse:
        return pb.VersionResponse(
            version="0.1.0", runtime_name=RUNTIME_NAME,
            runtime_version=__version__, runtime_api_version=CRI_API_VERSION,
        )

    async def Status(
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusResponse:
        conditions = [
            pb.RuntimeCondition(type="RuntimeReady", status=True),
            pb.RuntimeCondition(type="NetworkReady", status=True),
        ]
        return pb.StatusResponse(status=pb.RuntimeStatus(conditions=conditions))
