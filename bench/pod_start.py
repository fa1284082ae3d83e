"""pod_start: pod startup through the whole node, as a user sees it — API create -> the
pod Running (observed by a watch) — on `kubenode runtime` and on containerd 1.6's CRI
plugin, side by side in one run.

Each runtime gets its own real processes: `kubenode server` (API server, scheduler,
controllers), the runtime, and a `kubenode kubelet` (maxPods 110). Measured (images
present, no pull):
- 1 pod x N sequential (default 50): create -> Running, p50/p99;
- N pods created at once (default 30): each pod's create -> Running, p50/p99;
- 110 pods created at once: time until all are Running; then the agent's resident memory
  and CPU over a quiet window at 110 pods (kubelet process; the runtime daemon and its
  per-container monitors — conmon or containerd-shim — reported apart).
Ratios kubenode/containerd per measure.

Anchors: upstream pod startup SLO (p99 <= 5 s, stateless pods, images present); k3s
agent ~275 MB RSS. Goals: p99 <= 1 s; ratio <= 1.0; 110 pods <= 60 s; agent RSS <= 150 MB.
Usage: python -m bench pod_start [--sequential 50] [--parallel 30] [--max-pods 110]
                                 [--runtime kubenode|containerd|both]"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import Report, percentile
from kubenode.client.api import ApiClient
from kubenode.client.errors import ApiError

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "default"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Node:
    """One node's processes, started by `node()`."""

    name: str
    kubeconfig: Path
    kubelet: subprocess.Popen[bytes]
    runtime_pid: int
    server_pid: int
    monitor_match: tuple[str, str]  # (comm prefix, cmdline substring) of per-pod monitors
    kubelet_log: Path


@dataclass
class Results:
    sequential: list[float] = field(default_factory=list)
    parallel: list[float] = field(default_factory=list)
    all_running_s: float = float("nan")
    kubelet_rss_mb: float = float("nan")
    kubelet_cpu: float = float("nan")
    runtime_rss_mb: float = float("nan")
    runtime_cpu: float = float("nan")
    monitors_rss_mb: float = float("nan")
    # CPU seconds per pod during the parallel start, by process
    cpu_per_pod: dict[str, float] = field(default_factory=dict)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


@contextlib.contextmanager
def node(kind: str, tmp: Path) -> Iterator[Node]:
    """Server + runtime + kubelet in `tmp`, the node Ready; everything removed after."""
    from tests.fixtures.apiserver import start_api_server
    from tests.fixtures.containerd import pick_subnet, run_containerd
    from tests.fixtures.images import build_layout
    from tests.runtime.harness import RuntimeProc, remove_cgroup, unmount_under

    subnet = pick_subnet(prefix=24, within="10.42.232.0/22")  # no test uses it
    cgroup_root = f"knbench-{secrets.token_hex(3)}"
    name = f"bench-{kind}-{secrets.token_hex(2)}"
    (tmp / "resolv.conf").write_text("nameserver 127.0.0.53\n")
    with contextlib.ExitStack() as stack:
        stack.callback(unmount_under, tmp)  # last: whatever a stopped kubelet left mounted
        server = stack.enter_context(start_api_server(tmp / "server", control_plane=True))
        stack.callback(remove_cgroup, cgroup_root)  # after the runtime has gone (LIFO)
        if kind == "containerd":
            ctrd = stack.enter_context(run_containerd(subnet=subnet))
            endpoint, runtime_pid = ctrd.endpoint, ctrd.pid
            monitors = ("containerd-shim", str(ctrd.socket))
        else:
            layouts = [build_layout(k, tmp / k) for k in ("busybox", "pause")]
            rt = RuntimeProc(layouts=[b.path for b in layouts], pod_cidr=subnet)
            stack.callback(rt.cleanup)
            rt.start()
            assert rt.proc is not None
            endpoint, runtime_pid = f"unix://{rt.socket}", rt.proc.pid
            monitors = ("conmon", str(rt.dir))
        log = tmp / "kubelet.log"
        with log.open("ab") as out:
            kubelet = subprocess.Popen(
                [sys.executable, "-m", "kubenode", "kubelet", "--node-name", name,
                 "--kubeconfig", str(server.kubeconfig),
                 "--container-runtime-endpoint", endpoint,
                 "--root-dir", str(tmp / "kubelet"), "--pod-logs-dir", str(tmp / "logs"),
                 "--cgroup-root", cgroup_root, "--resolv-conf", str(tmp / "resolv.conf"),
                 "--port", "0", "--healthz-port", "0", "--node-ip", "127.0.0.1",
                 "--max-pods", "110"],
                stdout=out, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
        stack.callback(_stop, kubelet)
        yield Node(name=name, kubeconfig=server.kubeconfig, kubelet=kubelet,
                   runtime_pid=runtime_pid, server_pid=server.proc.pid,
                   monitor_match=monitors, kubelet_log=log)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "bench"}},
            "spec": {"terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": "busybox",
                                     "imagePullPolicy": "IfNotPresent",
                                     "command": ["sleep", "3600"]}]}}


def _running(pod: dict[str, Any]) -> bool:
    st = pod.get("status") or {}
    cs = st.get("containerStatuses") or []
    return st.get("phase") == "Running" and bool(cs) and all(
        "running" in (c.get("state") or {}) for c in cs)


class Watcher:
    """One watch on the bench pods: the first moment each is seen Running, and which
    ones are gone."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.running: dict[str, float] = {}
        self.present: set[str] = set()
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        listed = await self.client.list("pods", namespace=NAMESPACE, label_selector="app=bench")
        self.present = {p["metadata"]["name"] for p in listed["items"]}
        rv = listed["metadata"]["resourceVersion"]
        self.task = asyncio.create_task(self._run(rv))

    async def _run(self, rv: str) -> None:
        async for ev in self.client.watch("pods", namespace=NAMESPACE, resource_version=rv,
                                          label_selector="app=bench"):
            if ev.type == "BOOKMARK":
                continue
            name = ev.object["metadata"]["name"]
            if ev.type == "DELETED":
                self.present.discard(name)
            else:
                self.present.add(name)
                if name not in self.running and _running(ev.object):
                    self.running[name] = time.monotonic()
            self.changed.set()

    async def until(self, cond: Any, secs: float, what: str) -> None:
        deadline = time.monotonic() + secs
        while not cond():
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out after {secs:.0f}s waiting for {what}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


async def _create(client: ApiClient, name: str, created: dict[str, float]) -> None:
    created[name] = time.monotonic()
    await client.create("pods", _pod(name), namespace=NAMESPACE)


async def _delete_all(client: ApiClient, w: Watcher, names: list[str]) -> None:
    """Graceful deletes: a pod leaves the API when the kubelet has stopped and cleaned it
    up, so the next measure does not share the node with the cleanup of this one."""
    async def one(n: str) -> None:
        with contextlib.suppress(ApiError):
            await client.delete("pods", n, namespace=NAMESPACE, grace_period_seconds=1)
    await asyncio.gather(*(one(n) for n in names))
    await w.until(lambda: not (w.present & set(names)), 300, "bench pods deleted")


def _proc_stat(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds user+system) of one process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss / 1024, (int(fields[11]) + int(fields[12])) / CLK_TCK


def _machine_cpu() -> float:
    """CPU seconds the whole machine has been busy (not idle or iowait)."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(v) - v[3] - v[4]) / CLK_TCK


def _cpu_by_process(n: Node) -> dict[str, float]:
    return {"API server": _proc_stat(n.server_pid)[1], "kubelet": _proc_stat(n.kubelet.pid)[1],
            "runtime daemon": _proc_stat(n.runtime_pid)[1], "machine": _machine_cpu()}


def _monitors_rss(comm_prefix: str, marker: str) -> float:
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (entry / "comm").read_text().startswith(comm_prefix) and \
                    marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                total += _proc_stat(int(entry.name))[0]
    return total


async def measure(n: Node, *, sequential: int, parallel: int, max_pods: int,
                  quiet: float) -> Results:
    res = Results()
    async with ApiClient.from_kubeconfig(str(n.kubeconfig)) as client:
        for _ in range(600):  # node Ready, and the default SA (ServiceAccount admission)
            with contextlib.suppress(ApiError):
                got = await client.get("nodes", n.name)
                await client.get("serviceaccounts", "default", namespace=NAMESPACE)
                if any(c["type"] == "Ready" and c["status"] == "True"
                       for c in got.get("status", {}).get("conditions", [])):
                    break
            await asyncio.sleep(0.2)
        else:
            raise TimeoutError(f"node {n.name} never became Ready")
        w = Watcher(client)
        await w.start()
        try:
            created: dict[str, float] = {}
            names = [f"seq-{i}" for i in range(sequential)]
            for name in names:
                await _create(client, name, created)
                await w.until(lambda name=name: name in w.running, 60, f"{name} Running")
                res.sequential.append(w.running[name] - created[name])
            await _delete_all(client, w, names)

            names = [f"par-{i}" for i in range(parallel)]
            cpu0 = _cpu_by_process(n)
            await asyncio.gather(*(_create(client, nm, created) for nm in names))
            await w.until(lambda: all(nm in w.running for nm in names), 300,
                          f"{parallel} pods Running")
            cpu1 = _cpu_by_process(n)
            res.parallel = [w.running[nm] - created[nm] for nm in names]
            res.cpu_per_pod = {k: (cpu1[k] - cpu0[k]) / parallel for k in cpu0}
            res.cpu_per_pod["other processes (runc, CNI, monitors, bench)"] = \
                res.cpu_per_pod.pop("machine") - sum(res.cpu_per_pod.values())
            await _delete_all(client, w, names)

            names = [f"max-{i}" for i in range(max_pods)]
            t0 = time.monotonic()
            await asyncio.gather(*(_create(client, nm, created) for nm in names))
            await w.until(lambda: all(nm in w.running for nm in names), 600,
                          f"{max_pods} pods Running")
            res.all_running_s = time.monotonic() - t0
            k0 = _proc_stat(n.kubelet.pid)
            r0 = _proc_stat(n.runtime_pid)
            await asyncio.sleep(quiet)
            k1 = _proc_stat(n.kubelet.pid)
            r1 = _proc_stat(n.runtime_pid)
            res.kubelet_rss_mb, res.runtime_rss_mb = k1[0], r1[0]
            res.kubelet_cpu = (k1[1] - k0[1]) / quiet
            res.runtime_cpu = (r1[1] - r0[1]) / quiet
            res.monitors_rss_mb = _monitors_rss(*n.monitor_match)
            await _delete_all(client, w, names)
        finally:
            await w.stop()
    return res


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench pod_start")
    ap.add_argument("--sequential", type=int, default=50)
    ap.add_argument("--parallel", type=int, default=30)
    ap.add_argument("--max-pods", type=int, default=110)
    ap.add_argument("--quiet", type=float, default=20.0,
                    help="seconds of the CPU window at max pods")
    ap.add_argument("--runtime", choices=["kubenode", "containerd", "both"], default="both")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    kinds = ["kubenode", "containerd"] if args.runtime == "both" else [args.runtime]
    results: dict[str, Results] = {}
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix="kn-bench-") as d, node(kind, Path(d)) as n:
            try:
                results[kind] = asyncio.run(measure(
                    n, sequential=args.sequential, parallel=args.parallel,
                    max_pods=args.max_pods, quiet=args.quiet))
            except Exception:
                print(n.kubelet_log.read_text()[-3000:], file=sys.stderr)
                raise

    report = Report(name="pod_start",
                    anchor="upstream pod startup SLO p99 <= 5 s (images present); "
                           "k3s agent ~275 MB RSS",
                    columns=["measure", *kinds, *(["ratio"] if len(kinds) == 2 else []),
                             "goal"])

    def row(label: str, values: list[float], goal: str) -> None:
        ratio = [_ratio(values[0], values[1])] if len(values) == 2 else []
        report.add(label, *values, *ratio, goal)

    for label, get, goal in (
        (f"sequential x{args.sequential} p50 s", lambda r: percentile(r.sequential, 50), ""),
        (f"sequential x{args.sequential} p99 s", lambda r: percentile(r.sequential, 99),
         "<= 1"),
        (f"parallel x{args.parallel} p50 s", lambda r: percentile(r.parallel, 50), ""),
        (f"parallel x{args.parallel} p99 s", lambda r: percentile(r.parallel, 99), "<= 1"),
        (f"{args.max_pods} pods all Running s", lambda r: r.all_running_s, "<= 60"),
        (f"kubelet RSS MiB at {args.max_pods}", lambda r: r.kubelet_rss_mb, "<= 150"),
        (f"kubelet CPU cores at {args.max_pods}", lambda r: r.kubelet_cpu, ""),
        ("runtime daemon RSS MiB", lambda r: r.runtime_rss_mb, ""),
        ("runtime daemon CPU cores", lambda r: r.runtime_cpu, ""),
        ("per-pod monitors RSS MiB (sum)", lambda r: r.monitors_rss_mb, ""),
    ):
        row(label, [get(results[k]) for k in kinds], goal)
    for what in results[kinds[0]].cpu_per_pod:
        row(f"parallel: CPU s per pod, {what}",
            [results[k].cpu_per_pod.get(what, float("nan")) for k in kinds], "")
    report.notes.append("latency = API create -> watch event with phase Running and the "
                        "container running; server, runtime and kubelet are separate "
                        "processes on this machine (2 cores)")
    report.notes.append("monitors: conmon per container (kubenode) vs containerd-shim-runc-v2 "
                        "per pod (containerd)")
    report.emit()
    return 0
