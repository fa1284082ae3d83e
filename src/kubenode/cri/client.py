"""Async CRI v1 client over grpc.aio.

Contract: the kubelet reaches the container runtime only through the Protocols below,
composed like upstream's `cri-api/pkg/apis/services.go`:

    RuntimeService = RuntimeVersioner + PodSandboxManager + ContainerManager + RuntimeStatus
    ImageManagerService

`RemoteRuntimeService` / `RemoteImageService` implement them over one grpc.aio channel
on the runtime endpoint (`unix:///path`). Every call has a timeout (default 2 min as
upstream's `--runtime-request-timeout`; pulls take longer). Errors come out as `CRIError`
carrying the gRPC status code; `CRIError.not_found` tells a vanished object apart.
Messages are the generated protobuf types (`kubenode.cri.api_pb2`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import grpc

from kubenode.cri import api_pb2 as pb
from kubenode.cri import api_pb2_grpc as pb_grpc

DEFAULT_TIMEOUT = 120.0
PULL_TIMEOUT = 600.0


class CRIError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.code == grpc.StatusCode.NOT_FOUND

    def __str__(self) -> str:
        return self.message


class RuntimeVersioner(Protocol):
    async def version(self) -> pb.VersionResponse: ...


class RuntimeStatus(Protocol):
    async def status(self) -> pb.RuntimeStatus: ...


class PodSandboxManager(Protocol):
    async def run_pod_sandbox(self, config: pb.PodSandboxConfig,
                              runtime_handler: str = "") -> str: ...
    async def stop_pod_sandbox(self, sandbox_id: str) -> None: ...
    async def remove_pod_sandbox(self, sandbox_id: str) -> None: ...
    async def pod_sandbox_status(self, sandbox_id: str) -> pb.PodSandboxStatus: ...
    async def list_pod_sandbox(self, filter: pb.PodSandboxFilter | None = None,
                               ) -> list[pb.PodSandbox]: ...


class ContainerManager(Protocol):
    async def create_container(self, sandbox_id: str, config: pb.ContainerConfig,
                               sandbox_config: pb.PodSandboxConfig) -> str: ...
    async def start_container(self, container_id: str) -> None: ...
    async def stop_container(self, container_id: str, grace_seconds: int) -> None: ...
    async def remove_container(self, container_id: str) -> None: ...
    async def list_containers(self, filter: pb.ContainerFilter | None = None,
                              ) -> list[pb.Container]: ...
    async def container_status(self, container_id: str) -> pb.ContainerStatus: ...
    async def exec_sync(self, container_id: str, cmd: list[str],
                        timeout_seconds: float) -> pb.ExecSyncResponse: ...
    async def reopen_container_log(self, container_id: str) -> None: ...


class RuntimeService(RuntimeVersioner, RuntimeStatus, PodSandboxManager, ContainerManager,
                     Protocol):
    """The runtime half of CRI, as upstream composes it."""


class ImageManagerService(Protocol):
    async def list_images(self) -> list[pb.Image]: ...
    async def image_status(self, image: str) -> pb.Image | None: ...
    async def pull_image(self, image: str, auth: pb.AuthConfig | None = None,
                         sandbox_config: pb.PodSandboxConfig | None = None) -> str: ...
    async def remove_image(self, image: str) -> None: ...


def _err(e: grpc.aio.AioRpcError) -> CRIError:
    return CRIError(e.code(), e.details() or str(e.code()))


@dataclass(kw_only=True)
class Connection:
    """One grpc.aio channel to the runtime endpoint, shared by both services."""

    endpoint: str
    channel: grpc.aio.Channel = field(init=False)

    def __post_init__(self) -> None:
        target = self.endpoint
        if target.startswith("/"):
            target = "unix://" + target
        self.channel = grpc.aio.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", 16 << 20),
            ("grpc.max_send_message_length", 16 << 20),
        ])

    async def close(self) -> None:
        await self.channel.close()


@dataclass(kw_only=True)
class RemoteRuntimeService:
    conn: Connection
    timeout: float = DEFAULT_TIMEOUT
    _stub: pb_grpc.RuntimeServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self._stub = pb_grpc.RuntimeServiceStub(self.conn.channel)

    async def version(self) -> pb.VersionResponse:
        try:
            r: pb.VersionResponse = await self._stub.Version(
                pb.VersionRequest(version="v1"), timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise _err(e) from None
        return r

    async def status(self) -> pb.RuntimeStatus:
        try:
            r = await self._stub.Status(pb.StatusRequest(), timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise _err(e) from None
        return r.status

    async def run_pod_sandbox(self, config: pb.PodSandboxConfig,
                              runtime_handler: str = "") -> str:
        try:
            r = await self._stub.RunPodSandbox(
                pb.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler),
                timeout=self.timeout * 2)
        except grpc.aio.AioRpcError as e:
            raise _err(e) from None
        return r.pod_sandbox_id

    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        try:
            await self._stub.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id),
                                            timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise _err(e) from None

    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        try:
            await self._stub.RemovePodSandbox(
                pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise _err(e) from None

    async def pod_sandbox_status(self, sandbox_id: str) -> pb.PodSandboxStatus:
        try:
            r = await self._stub.PodSandboxStatus(
                pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id), timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise _err(e) from None
        return r.status

    async def list_pod_sandbox(self, filter: pb.PodSandboxFilter | None = None,
                               ) -> list[pb.PodSandbox]:
        try:
            r = await self._stub.ListPodSandbox(pb.ListPodSandboxRequest(filter=filter),
                                                timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise _err(e) from None
        return list(r.items)

    async def create_container(self, sandbox_id: str, config: pb.ContainerConfig,
                               sandbox_config: pb.PodSandboxConfig) -> str:
        try:
            r = await self._stub.CreateContainer(pb.CreateContainerRequest(
                pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox_config),
                timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise _err(e) from None
        return r.container_id

    async def start_container(self, container_id: str) -> None:
        try:
            await self._stub.StartContainer(pb.StartContainerRequest(container_id=container_id),
                                            timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise _err(e) from None

    async def stop_container(self, container_id: str, grace_seconds: int) -> None:
        try:
            await self._stub.StopContainer(
                pb.StopContainerRequest(container_id=container_id, timeout=grace_seconds),
                timeout=self.timeout + grace_seconds)
        except grpc.aio.AioRpcError as e:
            raise _err(e) from None

    async def remove_container(self, container_id: str) -> None:
        try:
            await self._stub.RemoveContainer(
                pb.RemoveContainerRequest(container_id=container_id), timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise _err(e) from None

    async def list_containers(self, filter: pb.ContainerFilter | None = None,
                              ) -> list[pb.Container]:
        try:
            r = await self._stub.ListContainers(pb.ListContainersRequest(filter=filter),
                                                timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise _err(e) from None
        return list(r.containers)

    async def container_status(self, container_id: str) -> pb.ContainerStatus:
        try:
            r = await self._stub.ContainerStatus(
                pb.ContainerStatusRequest(container_id=container_id), timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise _err(e) from None
        return r.status

    async def reopen_container_log(self, container_id: str) -> None:
        try:
            await self._stub.ReopenContainerLog(
                pb.ReopenContainerLogRequest(container_id=container_id), timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise _err(e) from None

    async def exec_sync(self, container_id: str, cmd: list[str],
                        timeout_seconds: float) -> pb.ExecSyncResponse:
        try:
            r: pb.ExecSyncResponse = await self._stub.ExecSync(
                pb.ExecSyncRequest(container_id=container_id, cmd=cmd,
                                   timeout=int(timeout_seconds)),
                timeout=self.timeout + timeout_seconds)
        except grpc.aio.AioRpcError as e:
            raise _err(e) from None
        return r


@dataclass(kw_only=True)
class RemoteImageService:
    conn: Connection
    timeout: float = DEFAULT_TIMEOUT
    pull_timeout: float = PULL_TIMEOUT
    _stub: pb_grpc.ImageServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self._stub = pb_grpc.ImageServiceStub(self.conn.channel)

    async def list_images(self) -> list[pb.Image]:
        try:
            r = await self._stub.ListImages(pb.ListImagesRequest(), timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise _err(e) from None
        return list(r.images)

    async def image_status(self, image: str) -> pb.Image | None:
        try:
            r = await self._stub.ImageStatus(
                pb.ImageStatusRequest(image=pb.ImageSpec(image=image)), timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _err(e) from None
        return r.image if r.HasField("image") and r.image.id else None

    async def pull_image(self, image: str, auth: pb.AuthConfig | None = None,
                         sandbox_config: pb.PodSandboxConfig | None = None) -> str:
        try:
            r = await self._stub.PullImage(pb.PullImageRequest(
                image=pb.ImageSpec(image=image), auth=auth, sandbox_config=sandbox_config),
                timeout=self.pull_timeout)
        except grpc.aio.AioRpcError as e:
            raise _err(e) from None
        return r.image_ref

    async def remove_image(self, image: str) -> None:
        try:
            await self._stub.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image)),
                                         timeout=self.timeout)
        except grpc.aio.AioRpcError as e:
            raise _err(e) from None
