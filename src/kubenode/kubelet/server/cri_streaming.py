"""A `StreamingProvider` over CRI: finds the container (or sandbox) by the labels the
kubelet puts on everything it creates (io.kubernetes.pod.namespace / .name / .uid,
io.kubernetes.container.name) and asks the runtime for a streaming URL (CRI Exec,
Attach, PortForward) or runs ExecSync for /run.

Contract: `CriStreamingProvider(runtime=<grpc.aio RuntimeServiceStub>)`. A running
container is preferred over exited ones; none -> NotFound('container not found ("c")'),
no ready sandbox -> NotFound('pod "p" does not exist'). ExecSync output is stdout then
stderr; a non-zero exit code is not an error (like upstream /run, which returns output).
"""

from __future__ import annotations

from typing import Any

import grpc

from kubenode.cri import api_pb2 as pb
from kubenode.kubelet.server.providers import NotFound, StreamRequest

POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
CONTAINER_NAME = "io.kubernetes.container.name"


class CriStreamingProvider:
    def __init__(self, *, runtime: Any, rpc_timeout: float = 30.0) -> None:
        self._rt = runtime
        self._timeout = rpc_timeout

    def _pod_labels(self, req: StreamRequest) -> dict[str, str]:
        labels = {POD_NAMESPACE: req.namespace, POD_NAME: req.pod}
        if req.uid:
            labels[POD_UID] = req.uid
        return labels

    async def _container_id(self, req: StreamRequest) -> str:
        labels = {**self._pod_labels(req), CONTAINER_NAME: req.container}
        items = (await self._rt.ListContainers(pb.ListContainersRequest(
            filter=pb.ContainerFilter(label_selector=labels)), timeout=self._timeout)
        ).containers
        if not items:
            raise NotFound(f'container not found ("{req.container}")')
        running = [c for c in items if c.state == pb.CONTAINER_RUNNING]
        best = max(running or items, key=lambda c: c.created_at)
        return str(best.id)

    async def _sandbox_id(self, req: StreamRequest) -> str:
        items = (await self._rt.ListPodSandbox(pb.ListPodSandboxRequest(
            filter=pb.PodSandboxFilter(label_selector=self._pod_labels(req), state=(
                pb.PodSandboxStateValue(state=pb.SANDBOX_READY)))), timeout=self._timeout)
        ).items
        if not items:
            raise NotFound(f'pod "{req.pod}" does not exist')
        return str(max(items, key=lambda s: s.created_at).id)

    async def get_exec(self, req: StreamRequest) -> str:
        cid = await self._container_id(req)
        resp = await self._rt.Exec(pb.ExecRequest(
            container_id=cid, cmd=list(req.command), tty=req.tty, stdin=req.stdin,
            stdout=req.stdout, stderr=req.stderr and not req.tty), timeout=self._timeout)
        return str(resp.url)

    async def get_attach(self, req: StreamRequest) -> str:
        cid = await self._container_id(req)
        resp = await self._rt.Attach(pb.AttachRequest(
            container_id=cid, tty=req.tty, stdin=req.stdin, stdout=req.stdout,
            stderr=req.stderr and not req.tty), timeout=self._timeout)
        return str(resp.url)

    async def get_port_forward(self, req: StreamRequest) -> str:
        sid = await self._sandbox_id(req)
        resp = await self._rt.PortForward(pb.PortForwardRequest(
            pod_sandbox_id=sid, port=list(req.ports)), timeout=self._timeout)
        return str(resp.url)

    async def run_in_container(self, req: StreamRequest, *, exec_timeout: float) -> bytes:
        cid = await self._container_id(req)
        try:
            resp = await self._rt.ExecSync(pb.ExecSyncRequest(
                container_id=cid, cmd=list(req.command), timeout=int(exec_timeout)),
                timeout=exec_timeout + 10)
        except grpc.RpcError as err:
            raise NotFound(f"exec failed: {err}") from err
        return bytes(resp.stdout) + bytes(resp.stderr)
