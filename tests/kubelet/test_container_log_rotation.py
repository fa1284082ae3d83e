"""Container log rotation against real runtimes: a container writing as fast as it can
(busybox awk printing numbered 110-byte lines, ~50 MB/s through conmon or
containerd's shim), the kubelet's
ContainerLogManager rotating through CRI ReopenContainerLog with a 1 MiB limit and 3
files. The disk use stays bounded, the retained window holds every line in order (none
lost or cut across a rotation, read back through the kubelet's log reader, which
un-gzips rotated files) and the container keeps running."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from kubenode.cri import api_pb2 as pb
from kubenode.cri import api_pb2_grpc as pb_grpc
from kubenode.cri.client import Connection, RemoteRuntimeService
from kubenode.kubelet.containerlogmanager import ContainerLogManager
from kubenode.kubelet.logs import LogOptions, read_logs
from tests.fixtures.containerd import BUSYBOX_IMAGE, Containerd
from tests.fixtures.images import BuiltLayout
from tests.runtime.harness import RuntimeProc, remove_cgroup

pytestmark = [pytest.mark.root, pytest.mark.slow]

MAX_SIZE = 1 << 20
MAX_FILES = 3
WRITE_SECONDS = 6.0
PAD = "x" * 100
AWK_WRITER = f'BEGIN {{ for (i = 1; ; i++) printf "%d {PAD}\\n", i }}'


@dataclass
class Endpoint:
    endpoint: str
    image: str
    cgroup_root: str


@pytest.fixture(params=["kubenode", "containerd"])
async def endpoint(request: pytest.FixtureRequest, busybox_layout: BuiltLayout,
                   pause_layout: BuiltLayout) -> AsyncIterator[Endpoint]:
    cgroup_root = f"/kntest-{secrets.token_hex(4)}"
    if request.param == "containerd":
        ctrd: Containerd = request.getfixturevalue("containerd")
        yield Endpoint(endpoint=ctrd.endpoint, image=BUSYBOX_IMAGE, cgroup_root=cgroup_root)
        remove_cgroup(cgroup_root)
        return
    rt = RuntimeProc(layouts=[busybox_layout.path, pause_layout.path],
                     pod_cidr="10.42.218.0/24")
    try:
        await asyncio.to_thread(rt.start)
        yield Endpoint(endpoint=f"unix://{rt.socket}", image="busybox",
                       cgroup_root=cgroup_root)
    finally:
        await asyncio.to_thread(rt.cleanup)
        remove_cgroup(cgroup_root)


async def _wait_image(channel: grpc.aio.Channel, image: str) -> None:
    """containerd's CRI image cache learns of imported images asynchronously."""
    images = pb_grpc.ImageServiceStub(channel)
    for _ in range(100):
        if (await images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=image)),
                                     timeout=10)).image.id:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"runtime never listed {image}")


async def test_rotation_keeps_a_fast_writer_bounded_and_lossless(
        endpoint: Endpoint, tmp_path: Path) -> None:
    conn = Connection(endpoint=endpoint.endpoint)
    runtime = RemoteRuntimeService(conn=conn)
    uid = secrets.token_hex(8)
    name = f"rot-{uid[:6]}"
    pcfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="default"),
        hostname=name, log_directory=str(tmp_path / "logs"),
        linux=pb.LinuxPodSandboxConfig(cgroup_parent=f"{endpoint.cgroup_root}/pod{uid}"))
    manager = ContainerLogManager(runtime=runtime, max_size=MAX_SIZE, max_files=MAX_FILES,
                                  monitor_interval=0.1)
    await _wait_image(conn.channel, endpoint.image)
    sid = await runtime.run_pod_sandbox(pcfg)
    try:
        cid = await runtime.create_container(sid, pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="writer"), image=pb.ImageSpec(
                image=endpoint.image), command=["awk", AWK_WRITER],
            log_path="writer/0.log"), pcfg)
        await runtime.start_container(cid)
        log_path = tmp_path / "logs" / "writer" / "0.log"
        rotations = 0
        peak = 0
        start = time.monotonic()
        while time.monotonic() - start < WRITE_SECONDS:
            before = {p.name for p in log_path.parent.iterdir()}
            await manager.rotate_logs()
            after = {p.name for p in log_path.parent.iterdir()}
            rotations += len(after - before - {log_path.name})
            peak = max(peak, sum(p.stat().st_size for p in log_path.parent.iterdir()))
            await asyncio.sleep(0.1)
        status = await runtime.container_status(cid)
        assert status.state == pb.CONTAINER_RUNNING, "the writer must survive rotation"
        await runtime.stop_container(cid, 0)

        files = sorted(p.name for p in log_path.parent.iterdir())
        assert 2 <= len(files) <= MAX_FILES, files
        assert any(f.endswith(".gz") for f in files), f"older files compressed: {files}"
        assert rotations >= 3, f"only {rotations} rotations in {WRITE_SECONDS}s"

        out = bytearray()

        async def write(b: bytes) -> None:
            out.extend(b)

        await read_logs(log_path, LogOptions(), write)
        # The first line may be the tail of one whose start was in a removed file.
        numbers = [int(line.removesuffix(" " + PAD)) for line in out.decode().splitlines()[1:]]
        first, last = numbers[0], numbers[-1]
        assert numbers == list(range(first, last + 1)), "lines lost or cut in the window"
        written = sum(len(str(i)) + len(PAD) + 2 for i in range(1, last + 1))
        rate = written / WRITE_SECONDS / 1e6
        print(f"{endpoint.image}: {rate:.1f} MB/s of output, {rotations} rotations, "
              f"peak on disk {peak / 1e6:.1f} MB, window {first}..{last}")
        assert first > 1, "the oldest lines must have been dropped"
        # The size is checked every ~0.1 s (a round takes longer on a loaded machine), so
        # each file may overshoot by what the writer puts there (CRI framing included:
        # ~40 bytes a line) in that time.
        file_rate = (written + 40 * last) / WRITE_SECONDS
        assert peak < MAX_FILES * (MAX_SIZE + file_rate * 1.5), peak
    finally:
        await runtime.stop_pod_sandbox(sid)
        await runtime.remove_pod_sandbox(sid)
        await conn.close()
