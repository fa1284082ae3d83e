"""Kubelet test fixtures: a Kubelet wired to the session's containerd, with its own root
dir, pod-logs dir and a unique cgroup root, cleaned up after each test."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kubenode.cri.client import Connection, RemoteImageService, RemoteRuntimeService
from kubenode.kubelet import cm
from kubenode.kubelet.config import KubeletConfig
from kubenode.kubelet.kubelet import Kubelet
from tests.fixtures.containerd import pick_subnet
from tests.fixtures.images import BuiltLayout
from tests.runtime.harness import RuntimeProc


@dataclass
class FakeObjects:
    """ConfigMaps and Secrets for kubelets without an API server (the ObjectSource seam)."""

    config_maps: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    secrets: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.config_maps.get((namespace, name))

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get((namespace, name))

    async def get_persistent_volume_claim(self, namespace: str,
                                          name: str) -> dict[str, Any] | None:
        return None

    async def get_persistent_volume(self, name: str) -> dict[str, Any] | None:
        return None


@dataclass(frozen=True, kw_only=True)
class Backend:
    name: str
    endpoint: str
    subnet: str
    allow_plain_http: Callable[[str], None] = lambda _host: None


@pytest.fixture(scope="session", params=["containerd", "kubenode"])
def cri_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The kubelet's tests run against containerd and against `kubenode runtime`."""
    if request.param == "containerd":
        c = request.getfixturevalue("containerd")
        yield Backend(name="containerd", endpoint=c.endpoint, subnet=c.subnet,
                      allow_plain_http=c.allow_plain_http)
        return
    layouts: list[BuiltLayout] = [request.getfixturevalue("busybox_layout"),
                                  request.getfixturevalue("pause_layout")]
    subnet = pick_subnet()
    rt = RuntimeProc(layouts=[b.path for b in layouts], pod_cidr=subnet)
    try:
        rt.start()
        yield Backend(name="kubenode", endpoint=f"unix://{rt.socket}",
                      subnet=subnet)
    finally:
        rt.cleanup()


def make_pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4()),
                         "resourceVersion": "1"},
            "spec": {"containers": containers, "restartPolicy": "Always",
                     "terminationGracePeriodSeconds": 2, **spec}}


async def wait_for(cond: Callable[[], Any], secs: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + secs
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.2)


@pytest.fixture
async def kubelet(cri_backend: Backend, tmp_path: Path) -> AsyncIterator[Kubelet]:
    cgroot = f"kntest-{secrets.token_hex(3)}"
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.53\nsearch example.test\n")
    cfg = KubeletConfig(node_name="kn-test", root_dir=tmp_path / "kubelet",
                        pod_logs_dir=tmp_path / "pods-logs", cgroup_root=cgroot,
                        resolv_conf=resolv, sync_frequency=5.0)
    conn = Connection(endpoint=cri_backend.endpoint)
    k = Kubelet(config=cfg, runtime=RemoteRuntimeService(conn=conn),
                images=RemoteImageService(conn=conn), host_ips=["127.0.0.1"],
                objects=FakeObjects())
    k.pleg.relist_period = 0.5
    k.backend = cri_backend  # type: ignore[attr-defined]
    task = asyncio.create_task(k.run())
    await asyncio.wait_for(k.ready.wait(), 10)
    try:
        yield k
    finally:
        k.update_source("test", [])
        with contextlib.suppress(AssertionError):
            await wait_for(lambda: not k.pods and all(
                k.pod_workers.is_finished(u) for u in k.pod_workers.known()), 30,
                "pods to terminate")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # anything left in the runtime from this kubelet is removed
        rt = k.runtime_manager
        for uid, (ns, name) in (await rt.list_pod_uids()).items():
            st = await rt.get_pod_status(uid, name, ns)
            await rt.kill_pod(None, st, 0)
            await rt.remove_pod(st)
        await conn.close()
        for d in (cfg.root_dir / "pods").glob("*"):
            k.volume_manager.remove_pod_dir(d.name)
        cm.remove_cgroup(cgroot)
