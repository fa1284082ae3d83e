"""Stats of a real pod run by `kubenode runtime` (runc + conmon + CNI), found through CRI:
a container burning a CPU, its log, its pod's network namespace."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kubenode.cri import api_pb2 as pb
from kubenode.cri import api_pb2_grpc as pb_grpc
from kubenode.stats.cgroups import detect_cgroup_reader
from kubenode.stats.cri_source import CriStatsSource, cgroup_of_pid
from kubenode.stats.summary import CgroupStatsProvider, NodeStatsConfig
from tests.fixtures.containerd import Containerd
from tests.fixtures.images import BuiltLayout
from tests.runtime.harness import (
    RuntimeProc,
    container_config,
    pod_config,
    remove_cgroup,
    run_container,
    run_pod,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def runtime(busybox_layout: BuiltLayout, pause_layout: BuiltLayout) -> Iterator[RuntimeProc]:
    rt = RuntimeProc(layouts=[busybox_layout.path, pause_layout.path],
                     pod_cidr="10.42.217.0/24")
    try:
        rt.start()
        yield rt
    finally:
        rt.cleanup()


def test_cgroup_of_pid(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_text(
        "9:name=systemd:/\n4:memory:/kubepods/pod1/abc\n2:cpu,cpuacct:/kubepods/pod1/abc\n"
        "0::/\n")
    assert cgroup_of_pid(7, version=1, proc_root=str(tmp_path)) == "/kubepods/pod1/abc"
    assert cgroup_of_pid(7, version=2, proc_root=str(tmp_path)) == "/"
    assert cgroup_of_pid(8, version=1, proc_root=str(tmp_path)) is None


async def test_summary_of_a_real_pod(runtime: RuntimeProc, tmp_path: Path) -> None:
    pcfg = pod_config(runtime, "busy")
    sid = run_pod(runtime, pcfg)
    cid = run_container(runtime, sid, pcfg, container_config(
        "burn", ["sh", "-c", "echo started; while :; do :; done"]))
    reader = detect_cgroup_reader()
    async with grpc.aio.insecure_channel(f"unix://{runtime.socket}") as ch:
        source = CriStatsSource(runtime=pb_grpc.RuntimeServiceStub(ch),
                                root_dir=str(tmp_path), cgroup_version=reader.version)
        provider = CgroupStatsProvider(
            config=NodeStatsConfig(node_name="n", root_dir=str(tmp_path),
                                   cpu_min_interval=0.5),
            source=source, cgroups=reader, now=time.time)
        pods = await source.pods_for_stats()
        (pod,) = [p for p in pods if p.name == "busy"]
        assert pod.uid == pcfg.metadata.uid and pod.netns_pid
        assert pod.cgroup == pcfg.linux.cgroup_parent
        (c,) = pod.containers
        assert c.id == cid and c.cgroup and c.cgroup.startswith(pod.cgroup + "/")
        await provider.summary()
        await asyncio.sleep(2)
        s = await provider.summary()
    (pj,) = [p for p in s["pods"] if p["podRef"]["name"] == "busy"]
    (cj,) = pj["containers"]
    cores = cj["cpu"]["usageNanoCores"] / 1e9
    print(f"busy container: {cores:.3f} cores, working set "
          f"{cj['memory']['workingSetBytes'] / 2**20:.2f} MiB")
    assert 0.3 < cores < 1.1
    assert pj["cpu"]["usageNanoCores"] >= cj["cpu"]["usageNanoCores"] * 0.95
    assert cj["memory"]["workingSetBytes"] > 0
    assert cj["logs"]["usedBytes"] > 0
    assert "eth0" in [i["name"] for i in pj["network"]["interfaces"]]
    assert pj["network"]["name"] == "eth0"


async def wait_images(images: pb_grpc.ImageServiceStub) -> None:
    """containerd's CRI image cache learns of `ctr import`ed images asynchronously."""
    for _ in range(100):
        found = [(await images.ImageStatus(pb.ImageStatusRequest(
            image=pb.ImageSpec(image=name)), timeout=10)).image.id
            for name in ("registry.k8s.io/pause:3.10", "docker.io/library/busybox:latest")]
        if all(found):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("containerd never listed the imported images")


async def test_summary_of_a_containerd_pod(containerd: Containerd, tmp_path: Path) -> None:
    cg_root = f"/kntest-{secrets.token_hex(4)}"
    uid = secrets.token_hex(8)
    pcfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="busy-ctrd", uid=uid, namespace="default"),
        hostname="busy-ctrd", log_directory=str(tmp_path / "logs"),
        linux=pb.LinuxPodSandboxConfig(cgroup_parent=f"{cg_root}/pod{uid}"))
    reader = detect_cgroup_reader()
    async with grpc.aio.insecure_channel(containerd.endpoint) as ch:
        rt = pb_grpc.RuntimeServiceStub(ch)
        await wait_images(pb_grpc.ImageServiceStub(ch))
        sid = (await rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pcfg), timeout=60)
               ).pod_sandbox_id
        try:
            cid = (await rt.CreateContainer(pb.CreateContainerRequest(
                pod_sandbox_id=sid, sandbox_config=pcfg, config=pb.ContainerConfig(
                    metadata=pb.ContainerMetadata(name="burn"),
                    image=pb.ImageSpec(image="docker.io/library/busybox:latest"),
                    command=["sh", "-c", "echo started; while :; do :; done"],
                    log_path="burn/0.log")), timeout=60)).container_id
            await rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
            source = CriStatsSource(runtime=rt, root_dir=str(tmp_path),
                                    cgroup_version=reader.version)
            provider = CgroupStatsProvider(
                config=NodeStatsConfig(node_name="n", root_dir=str(tmp_path),
                                       cpu_min_interval=0.5),
                source=source, cgroups=reader, now=time.time)
            (pod,) = [p for p in await source.pods_for_stats() if p.uid == uid]
            assert pod.cgroup == f"{cg_root}/pod{uid}" and pod.netns_pid
            (c,) = pod.containers
            assert c.id == cid and c.cgroup and c.cgroup.startswith(pod.cgroup + "/")
            await provider.summary()
            await asyncio.sleep(2)
            s = await provider.summary()
        finally:
            await rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=60)
            await rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid),
                                      timeout=60)
            remove_cgroup(cg_root)
    (pj,) = [p for p in s["pods"] if p["podRef"]["uid"] == uid]
    (cj,) = pj["containers"]
    cores = cj["cpu"]["usageNanoCores"] / 1e9
    print(f"containerd busy container: {cores:.3f} cores")
    assert 0.3 < cores < 1.1
    assert cj["logs"]["usedBytes"] > 0
    assert pj["network"]["name"] == "eth0"
