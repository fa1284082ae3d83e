"""Integration fixture: a real `kubenode server` (the apiserver fixture) with the
scheduler and controllers running, a simulated kubelet for fake nodes, and helpers to
run the real `kubectl` against it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubenode.client import ApiClient, load_kubeconfig
from tests.controllers.simkubelet import SimKubelet
from tests.fixtures.apiserver import APIServerProcess, start_api_server

T = TypeVar("T")
Obj = dict[str, Any]
GRACE = 3.0  # --node-monitor-grace-period in these tests


@dataclass
class Cluster:
    client: ApiClient
    kubeconfig: str
    sim: SimKubelet

    async def kubectl(self, *args: str, check: bool = True, limit: float = 60,
                      stdin: str | None = None) -> str:
        exe = shutil.which("kubectl") or "kubectl"
        proc = await asyncio.create_subprocess_exec(
            exe, "--kubeconfig", self.kubeconfig, *args, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.PIPE,
            env={**os.environ, "KUBECONFIG": self.kubeconfig})
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), limit)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): "
                                 f"{err.decode()}{out.decode()}")
        return out.decode() + ("" if check else err.decode())


def deployment_manifest(name: str, ns: str, image: str, replicas: int = 1) -> str:
    """What `kubectl create deployment NAME --image=IMAGE` makes, as a manifest (that
    command sends protobuf, which kubenode server does not read)."""
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers: [{{name: busybox, image: "{image}"}}]
"""


async def wait_for(fn: Callable[[], Awaitable[T]], *, limit: float = 20.0,
                   interval: float = 0.1, what: str = "condition") -> T:
    """Poll fn() until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + limit
    last: Any = None
    while True:
        try:
            last = await fn()
        except Exception as err:  # keep polling through transient errors
            last = err
        else:
            if last:
                return last
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last={last!r}")
        await asyncio.sleep(interval)


@contextlib.contextmanager
def server_process() -> Iterator[APIServerProcess]:
    """`kubenode server` (tests/fixtures/apiserver.py) with its scheduler and
    controllers and a short node grace period, in a temp dir on a random port."""
    with tempfile.TemporaryDirectory(prefix="kn-ctrl-") as tmp, start_api_server(
            Path(tmp), extra_args=["--node-monitor-grace-period", str(GRACE),
                                   # tests share a zone; rate limiting has unit tests
                                   "--node-eviction-rate", "100"],
            control_plane=True) as server:
        yield server


@pytest.fixture(scope="module")
def control_plane_server() -> Iterator[APIServerProcess]:
    """One server per test module (tests use their own namespaces and nodes)."""
    with server_process() as server:
        yield server


@pytest.fixture
async def cluster(control_plane_server: APIServerProcess) -> AsyncIterator[Cluster]:
    kubeconfig = str(control_plane_server.kubeconfig)
    client = ApiClient(load_kubeconfig(kubeconfig))
    try:
        async with SimKubelet(client) as sim:
            yield Cluster(client=client, kubeconfig=kubeconfig, sim=sim)
    finally:
        await client.close()
