"""exec and /run through the kubelet server into a real containerd pod: the server finds
the container by the kubelet's CRI labels, asks containerd for its streaming URL and
proxies the WebSocket (v4.channel.k8s.io) connection to it."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from kubenode.cri import api_pb2 as pb
from kubenode.cri import api_pb2_grpc as pb_grpc
from kubenode.kubelet.server.cri_streaming import CriStreamingProvider
from tests.fixtures.containerd import Containerd
from tests.kubelet_server.conftest import Kubelet
from tests.kubelet_server.test_server import get, tls
from tests.runtime.harness import remove_cgroup
from tests.stats.test_cri_source import wait_images

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
async def pod(containerd: Containerd, tmp_path: Path) -> AsyncIterator[tuple[str, object]]:
    cg_root = f"/kntest-{secrets.token_hex(4)}"
    uid = secrets.token_hex(8)
    name = f"web-{secrets.token_hex(3)}"
    labels = {"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": "default",
              "io.kubernetes.pod.uid": uid}
    pcfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="default"),
        hostname=name, log_directory=str(tmp_path / "logs"), labels=labels,
        linux=pb.LinuxPodSandboxConfig(cgroup_parent=f"{cg_root}/pod{uid}"))
    async with grpc.aio.insecure_channel(containerd.endpoint) as ch:
        rt = pb_grpc.RuntimeServiceStub(ch)
        await wait_images(pb_grpc.ImageServiceStub(ch))
        sid = (await rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pcfg), timeout=60)
               ).pod_sandbox_id
        try:
            cid = (await rt.CreateContainer(pb.CreateContainerRequest(
                pod_sandbox_id=sid, sandbox_config=pcfg, config=pb.ContainerConfig(
                    metadata=pb.ContainerMetadata(name="app"),
                    image=pb.ImageSpec(image="docker.io/library/busybox:latest"),
                    command=["sleep", "300"], log_path="app/0.log",
                    labels={**labels, "io.kubernetes.container.name": "app"})),
                timeout=60)).container_id
            await rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
            yield name, rt
        finally:
            await rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=60)
            await rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid),
                                      timeout=60)
            remove_cgroup(cg_root)


async def test_exec_and_run_into_containerd(kubelet: Kubelet,
                                            pod: tuple[str, object]) -> None:
    name, rt = pod
    kubelet.server.streaming = CriStreamingProvider(runtime=rt)
    url = (f"{kubelet.url}/exec/default/{name}/app?command=sh&command=-c"
           "&command=echo+hello%3B+echo+oops+%3E%262%3B+exit+3&stdout=1&stderr=1")
    channels: dict[int, bytes] = {1: b"", 2: b"", 3: b""}
    async with aiohttp.ClientSession() as s, s.ws_connect(
            url, ssl=tls(kubelet, kubelet.admin), protocols=["v4.channel.k8s.io"]) as ws:
        assert ws.protocol == "v4.channel.k8s.io"
        while True:
            msg = await asyncio.wait_for(ws.receive(), 10)
            if msg.type != aiohttp.WSMsgType.BINARY:
                break
            if msg.data:
                channels[msg.data[0]] += msg.data[1:]
    assert channels[1] == b"hello\n" and channels[2] == b"oops\n"
    status = json.loads(channels[3])
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"][0] == {"reason": "ExitCode", "message": "3"}

    status_code, text, _ = await get(kubelet, f"/run/default/{name}/app?command=echo"
                                     "&command=ran", kubelet.admin, method="POST")
    assert (status_code, text) == (200, "ran\n")
    status_code, text, _ = await get(kubelet, f"/exec/default/{name}/nope?command=ls"
                                     "&stdout=1", kubelet.admin, method="POST",
                                     headers={"Connection": "Upgrade",
                                              "Upgrade": "SPDY/3.1"})
    assert (status_code, text) == (404, 'container not found ("nope")')
