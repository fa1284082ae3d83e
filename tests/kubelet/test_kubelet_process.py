"""`kubenode kubelet` as a process on a real CRI runtime: static pods from
--pod-manifest-path, kill -9 and restart without duplicate sandboxes or containers,
removal of the manifest while the kubelet is down removes the orphaned pod and its logs."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from kubenode.cri import api_pb2 as pb
from kubenode.cri.client import Connection, RemoteRuntimeService
from kubenode.kubelet import cm
from tests.kubelet.conftest import Backend
from tests.runtime.harness import unmount_under

pytestmark = [pytest.mark.root, pytest.mark.slow]

MANIFEST = """apiVersion: v1
kind: Pod
metadata:
  name: static-web
  labels: {app: static}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo static > /index.html && exec httpd -f -p 8080 -h /"]
"""


def start_kubelet(backend: Backend, tmp: Path, cgroot: str) -> subprocess.Popen[bytes]:
    log = open(tmp / "kubelet.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "kubenode", "kubelet", "--node-name", "static-node",
         "--container-runtime-endpoint", backend.endpoint,
         "--pod-manifest-path", str(tmp / "manifests"), "--root-dir", str(tmp / "root"),
         "--pod-logs-dir", str(tmp / "logs"), "--cgroup-root", cgroot,
         "--resolv-conf", str(tmp / "resolv.conf"), "--port", "0", "--healthz-port", "0",
         "--node-ip", "127.0.0.1", "--file-check-frequency", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())


async def pod_state(rt: RemoteRuntimeService) -> tuple[list[pb.PodSandbox], list[pb.Container]]:
    sel = {"io.kubernetes.pod.name": "static-web-static-node"}
    sbs = await rt.list_pod_sandbox(pb.PodSandboxFilter(label_selector=sel))
    cs = await rt.list_containers(pb.ContainerFilter(label_selector=sel))
    return sbs, cs


async def test_static_pod_survives_kubelet_kill9(cri_backend: Backend, tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.53\n")
    (tmp_path / "manifests" / "web.yaml").write_text(MANIFEST)
    cgroot = f"kntest-{secrets.token_hex(3)}"
    conn = Connection(endpoint=cri_backend.endpoint)
    rt = RemoteRuntimeService(conn=conn)
    proc = start_kubelet(cri_backend, tmp_path, cgroot)
    try:
        state: dict[str, object] = {}

        async def running() -> bool:
            sbs, cs = await pod_state(rt)
            state["sbs"], state["cs"] = sbs, cs
            return any(c.state == pb.CONTAINER_RUNNING for c in cs)

        deadline = time.monotonic() + 60
        while not await running():
            assert proc.poll() is None, (tmp_path / "kubelet.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "kubelet.log").read_text()[-3000:]
            await asyncio.sleep(0.3)
        sbs = state["sbs"]
        assert isinstance(sbs, list) and len(sbs) == 1
        ip = (await rt.pod_sandbox_status(sbs[0].id)).network.ip
        async with aiohttp.ClientSession() as s:
            for _ in range(50):
                try:
                    async with s.get(f"http://{ip}:8080/index.html") as r:
                        assert (await r.text()).strip() == "static"
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.2)
            else:
                raise AssertionError("pod never served")
        before = sorted(c.id for c in state["cs"])  # type: ignore[attr-defined]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = start_kubelet(cri_backend, tmp_path, cgroot)
        await asyncio.sleep(6)  # several PLEG relists, syncs and housekeepings
        assert proc.poll() is None, (tmp_path / "kubelet.log").read_text()[-3000:]
        sbs2, cs2 = await pod_state(rt)
        assert [s.id for s in sbs2] == [s.id for s in sbs]
        assert sorted(c.id for c in cs2) == before
        # the manifest goes away while the kubelet is down -> on restart the pod is an
        # orphan: housekeeping removes it from the runtime, and its log directory too
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        (tmp_path / "manifests" / "web.yaml").unlink()
        proc = start_kubelet(cri_backend, tmp_path, cgroot)
        deadline = time.monotonic() + 40
        def logs_left() -> list[Path]:
            return [d for d in (tmp_path / "logs").iterdir()
                    if d.name.startswith("default_static-web-static-node_")]
        while (await pod_state(rt))[0] or logs_left():
            assert time.monotonic() < deadline, (tmp_path / "kubelet.log").read_text()[-3000:]
            await asyncio.sleep(0.3)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        sbs, _ = await pod_state(rt)
        for sb in sbs:
            await rt.stop_pod_sandbox(sb.id)
            await rt.remove_pod_sandbox(sb.id)
        await conn.close()
        cm.remove_cgroup(cgroot)
        unmount_under(tmp_path / "root")
