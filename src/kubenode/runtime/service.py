"""CRI RuntimeService of `kubenode runtime`: sandboxes, containers, ExecSync, stats.

A thin gRPC layer: each RPC validates nothing itself, calls the sandbox or container
manager, and turns a CRIError into its gRPC status with the message verbatim. Exec,
Attach and PortForward come from `streaming.StreamingRPCs` (they answer a URL of the
streaming server that `server.serve` starts and sets as `.streaming`); methods not built answer
UNIMPLEMENTED (the generated base class does that)."""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from kubenode import __version__
from kubenode.cri import api_pb2 as pb
from kubenode.cri import api_pb2_grpc as pb_grpc
from kubenode.runtime.cgroups import Cgroups
from kubenode.runtime.cni import CNI
from kubenode.runtime.config import RuntimeConfig
from kubenode.runtime.conmon import Monitors
from kubenode.runtime.containers import ContainerManager
from kubenode.runtime.errors import CRIError
from kubenode.runtime.imagelookup import ImageLookup
from kubenode.runtime.runc import Runc
from kubenode.runtime.sandbox import SandboxManager
from kubenode.runtime.state import Layout, Store
from kubenode.runtime.stats import StatsProvider
from kubenode.runtime.streaming import StreamingRPCs

log = logging.getLogger(__name__)

RUNTIME_NAME = "kubenode"
CRI_API_VERSION = "v1"

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


def rpc(fn: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Map CRIError (and anything unexpected) to a gRPC status; never crash the server."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await fn(self, request, context)
        except CRIError as err:
            await context.abort(err.code, err.message)
        except grpc.aio.AbortError:
            raise
        except Exception as err:
            log.exception("rpc failed method=%s", fn.__name__)
            await context.abort(grpc.StatusCode.UNKNOWN, f"{type(err).__name__}: {err}")
        raise AssertionError("unreachable")

    return wrapper


class RuntimeServicer(StreamingRPCs, pb_grpc.RuntimeServiceServicer):
    def __init__(self, *, config: RuntimeConfig, images: ImageLookup | None = None,
                 now: Callable[[], int] = time.time_ns) -> None:
        self._config = config
        self.images = images
        self.now = now
        self.layout = Layout(root=config.root, state=config.state)
        self.layout.make_dirs()
        self.store = Store(layout=self.layout)
        self.store.load()
        self.cgroups = Cgroups()
        self.runc = Runc(root=self.layout.runc_root)
        self.cni = CNI(conf_dir=config.cni_conf_dir, bin_dir=config.cni_bin_dir,
                       data_dir=self.layout.cni_data_dir, bridge=config.cni_bridge,
                       pod_cidr=config.pod_cidr)
        try:
            self.cni.ensure_default()
        except OSError as err:
            log.warning("cannot write the default CNI config dir=%s err=%s",
                        config.cni_conf_dir, err)
        self.monitors = Monitors(pidfile=lambda ident: self.layout.bundle(ident) / "conmon.pid")
        self.sandboxes = SandboxManager(store=self.store, layout=self.layout, cni=self.cni,
                                        runc=self.runc, images=images, cgroups=self.cgroups,
                                        now=now, monitors=self.monitors)
        self.containers = ContainerManager(store=self.store, layout=self.layout, runc=self.runc,
                                           sandboxes=self.sandboxes, images=images,
                                           cgroups=self.cgroups, now=now,
                                           monitors=self.monitors)
        self.sandboxes.containers = self.containers
        self.stats = StatsProvider(layout=self.layout, cgroups=self.cgroups, now=now)

    def image_in_use(self, image_id: str) -> bool:
        """Whether any container or sandbox was created from this image (RemoveImage
        refuses then)."""
        return any(c.image_id == image_id for c in self.store.containers.values()) or any(
            s.image_id == image_id for s in self.store.sandboxes.values())

    # ---- runtime -------------------------------------------------------------------------
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
        net_err = self.cni.status()
        net = pb.RuntimeCondition(type="NetworkReady", status=net_err is None)
        if net_err is not None:
            net.reason = "NetworkPluginNotReady"
            net.message = net_err
        conditions = [pb.RuntimeCondition(type="RuntimeReady", status=True), net]
        info = {}
        if request.verbose:
            info["config"] = json.dumps({
                "cniConfDir": str(self._config.cni_conf_dir),
                "cniBinDir": str(self._config.cni_bin_dir), "podCIDR": self.cni.pod_cidr,
                "cgroupVersion": self.cgroups.version, "root": str(self._config.root),
                "state": str(self._config.state)})
        return pb.StatusResponse(status=pb.RuntimeStatus(conditions=conditions), info=info,
                                 runtime_handlers=[pb.RuntimeHandler(name="")])

    @rpc
    async def UpdateRuntimeConfig(
        self, request: pb.UpdateRuntimeConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateRuntimeConfigResponse:
        self.cni.update_pod_cidr(request.runtime_config.network_config.pod_cidr)
        return pb.UpdateRuntimeConfigResponse()

    async def RuntimeConfig(
        self, request: pb.RuntimeConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.RuntimeConfigResponse:
        return pb.RuntimeConfigResponse(
            linux=pb.LinuxRuntimeConfiguration(cgroup_driver=pb.CGROUPFS))

    # ---- sandboxes -----------------------------------------------------------------------
    @rpc
    async def RunPodSandbox(
        self, request: pb.RunPodSandboxRequest, context: grpc.aio.ServicerContext
    ) -> pb.RunPodSandboxResponse:
        sid = await self.sandboxes.run(request.config, request.runtime_handler)
        return pb.RunPodSandboxResponse(pod_sandbox_id=sid)

    @rpc
    async def StopPodSandbox(
        self, request: pb.StopPodSandboxRequest, context: grpc.aio.ServicerContext
    ) -> pb.StopPodSandboxResponse:
        await self.sandboxes.stop(request.pod_sandbox_id)
        return pb.StopPodSandboxResponse()

    @rpc
    async def RemovePodSandbox(
        self, request: pb.RemovePodSandboxRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemovePodSandboxResponse:
        await self.sandboxes.remove(request.pod_sandbox_id)
        return pb.RemovePodSandboxResponse()

    @rpc
    async def PodSandboxStatus(
        self, request: pb.PodSandboxStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.PodSandboxStatusResponse:
        resp = self.sandboxes.status(request.pod_sandbox_id, verbose=request.verbose)
        return resp

    @rpc
    async def ListPodSandbox(
        self, request: pb.ListPodSandboxRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPodSandboxResponse:
        flt = request.filter if request.HasField("filter") else None
        return pb.ListPodSandboxResponse(items=self.sandboxes.list_all(flt))

    # ---- containers ----------------------------------------------------------------------
    @rpc
    async def CreateContainer(
        self, request: pb.CreateContainerRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateContainerResponse:
        cid = await self.containers.create(request.pod_sandbox_id, request.config)
        return pb.CreateContainerResponse(container_id=cid)

    @rpc
    async def StartContainer(
        self, request: pb.StartContainerRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartContainerResponse:
        await self.containers.start(request.container_id)
        return pb.StartContainerResponse()

    @rpc
    async def StopContainer(
        self, request: pb.StopContainerRequest, context: grpc.aio.ServicerContext
    ) -> pb.StopContainerResponse:
        await self.containers.stop(request.container_id, timeout_s=int(request.timeout))
        return pb.StopContainerResponse()

    @rpc
    async def RemoveContainer(
        self, request: pb.RemoveContainerRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveContainerResponse:
        await self.containers.remove(request.container_id)
        return pb.RemoveContainerResponse()

    @rpc
    async def ListContainers(
        self, request: pb.ListContainersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListContainersResponse:
        flt = request.filter if request.HasField("filter") else None
        return pb.ListContainersResponse(containers=await self.containers.list_all(flt))

    @rpc
    async def ContainerStatus(
        self, request: pb.ContainerStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.ContainerStatusResponse:
        return await self.containers.status(request.container_id, verbose=request.verbose)

    @rpc
    async def UpdateContainerResources(
        self, request: pb.UpdateContainerResourcesRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateContainerResourcesResponse:
        await self.containers.update_resources(request.container_id, request.linux)
        return pb.UpdateContainerResourcesResponse()

    @rpc
    async def ReopenContainerLog(
        self, request: pb.ReopenContainerLogRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReopenContainerLogResponse:
        await self.containers.reopen_log(request.container_id)
        return pb.ReopenContainerLogResponse()

    @rpc
    async def ExecSync(
        self, request: pb.ExecSyncRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExecSyncResponse:
        return await self.containers.exec_sync(request.container_id, list(request.cmd),
                                               int(request.timeout))

    # ---- stats ---------------------------------------------------------------------------
    @rpc
    async def ContainerStats(
        self, request: pb.ContainerStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ContainerStatsResponse:
        rec = self.containers.get(request.container_id)
        return pb.ContainerStatsResponse(stats=self.stats.container(rec))

    @rpc
    async def ListContainerStats(
        self, request: pb.ListContainerStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListContainerStatsResponse:
        f = request.filter
        out = []
        for rec in list(self.store.containers.values()):
            await self.containers.refresh(rec)
            if rec.state != "running":
                continue
            if f.id and not rec.id.startswith(f.id):
                continue
            if f.pod_sandbox_id and not rec.sandbox_id.startswith(f.pod_sandbox_id):
                continue
            stats = self.stats.container(rec)
            if any(stats.attributes.labels.get(k) != v for k, v in f.label_selector.items()):
                continue
            out.append(stats)
        return pb.ListContainerStatsResponse(stats=out)

    def _sandbox_stats(self, sid: str) -> pb.PodSandboxStats:
        rec = self.sandboxes.get(sid)
        running = [c for c in self.store.containers.values()
                   if c.sandbox_id == rec.id and c.state == "running"]
        return self.stats.sandbox(rec, running)

    @rpc
    async def PodSandboxStats(
        self, request: pb.PodSandboxStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PodSandboxStatsResponse:
        return pb.PodSandboxStatsResponse(stats=self._sandbox_stats(request.pod_sandbox_id))

    @rpc
    async def ListPodSandboxStats(
        self, request: pb.ListPodSandboxStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPodSandboxStatsResponse:
        f = request.filter
        out = []
        for rec in list(self.store.sandboxes.values()):
            self.sandboxes.refresh(rec)
            if rec.state != "ready" or (f.id and not rec.id.startswith(f.id)):
                continue
            stats = self._sandbox_stats(rec.id)
            if any(stats.attributes.labels.get(k) != v for k, v in f.label_selector.items()):
                continue
            out.append(stats)
        return pb.ListPodSandboxStatsResponse(stats=out)
