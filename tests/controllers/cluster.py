"""Integration fixture: a real `kubenode server` (the apiserver fixture) with the
scheduler and controllers running, a simulated kubelet for fake nodes, and helpers to
run the real `kubectl` against it."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubenode.client import ApiClient, load_kubeconfig
from tests.controllers.simkubelet import SimKubelet

T = TypeVar("T")
Obj = dict[str, Any]
GRACE = 3.0  # --node-monitor-grace-period in these tests


@dataclass
class Cluster:
    client: ApiClient
    kubeconfig: str
    sim: SimKubelet

    async def kubectl(self, *args: str, check: bool = True, limit: float = 60) -> str:
        exe = shutil.which("kubectl") or "kubectl"
        proc = await asyncio.create_subprocess_exec(
            exe, "--kubeconfig", self.kubeconfig, *args, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "KUBECONFIG": self.kubeconfig})
        out, err = await asyncio.wait_for(proc.communicate(), limit)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): "
                                 f"{err.decode()}{out.decode()}")
        return out.decode() + ("" if check else err.decode())


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


@dataclass
class ServerProcess:
    url: str
    kubeconfig: Path
    data_dir: Path
    proc: subprocess.Popen[bytes]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def control_plane_server() -> Iterator[ServerProcess]:
    """`kubenode server` with its scheduler and controllers, a short node grace period,
    in a temp dir on a random port; stopped and removed afterwards."""
    data_dir = Path(tempfile.mkdtemp(prefix="kn-ctrl-"))
    port = _free_port()
    log = open(data_dir / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubenode", "server", "--data-dir", str(data_dir),
         "--bind-address", "127.0.0.1", "--secure-port", str(port),
         "--node-monitor-grace-period", str(GRACE)],
        stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    kubeconfig = data_dir / "kubeconfig.yaml"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError("kubenode server exited: "
                                   + (data_dir / "server.log").read_text()[-3000:])
            if kubeconfig.exists() and _ready(port):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("kubenode server not ready: "
                                   + (data_dir / "server.log").read_text()[-3000:])
            time.sleep(0.1)
        yield ServerProcess(url=f"https://127.0.0.1:{port}", kubeconfig=kubeconfig,
                            data_dir=data_dir, proc=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def _ready(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
async def cluster(control_plane_server: ServerProcess) -> AsyncIterator[Cluster]:
    kubeconfig = str(control_plane_server.kubeconfig)
    client = ApiClient(load_kubeconfig(kubeconfig))
    try:
        async with SimKubelet(client) as sim:
            yield Cluster(client=client, kubeconfig=kubeconfig, sim=sim)
    finally:
        await client.close()
