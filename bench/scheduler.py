"""Scheduler throughput: 1,000 pending pods onto 100 simulated nodes; pods/s and the
latency from a pod's creation to its binding (p50/p99).

Upstream anchor: kube-scheduler's scheduler_perf "SchedulingBasic" (test/integration/
scheduler_perf, 5000 nodes / 1000 pods there; upstream reports ~100-300 pods/s on CI
machines).

Modes (both by default):
- inprocess: the scheduler loop over the in-memory fake API (decisions + cache only);
- server: `kubenode server` started here (temp dir, random port, its own scheduler),
  nodes and pods created through the API, bindings observed by a watch.

    python -m bench scheduler [--pods 1000] [--nodes 100] [--mode inprocess|server|both]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import Report, percentile

Obj = dict[str, Any]


def node_obj(i: int) -> Obj:
    name = f"bench-node-{i}"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": f"z{i % 3}"},
        },
        "spec": {},
        "status": {
            "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                }
            ],
        },
    }


def pod_obj(i: int) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"bench-pod-{i}", "namespace": "default", "labels": {"app": "bench"}},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "busybox",
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                }
            ]
        },
    }


async def inprocess(n_pods: int, n_nodes: int) -> tuple[float, list[float]]:
    from kubenode.server.controllers.api import NODES, PODS
    from kubenode.server.scheduler.scheduler import Scheduler
    from tests.controllers.fake import FakeApi, FakeInformers

    api = FakeApi()
    inf = FakeInformers(api)
    created: dict[str, float] = {}
    bound: dict[str, float] = {}
    all_bound = asyncio.Event()

    def on_update(old: Obj, new: Obj) -> None:
        if new["spec"].get("nodeName") and not old["spec"].get("nodeName"):
            bound[new["metadata"]["name"]] = time.perf_counter()
            if len(bound) >= n_pods:
                all_bound.set()

    inf.get(PODS).add_handlers(on_add=lambda o: None, on_update=on_update, on_delete=lambda o: None)
    sched = Scheduler(api=api, informers=inf)
    sched.recorder.api = _NoEvents()  # type: ignore[assignment]
    stop = asyncio.Event()
    task = asyncio.create_task(sched.run(stop))
    for i in range(n_nodes):
        api.put(NODES, node_obj(i))
    start = time.perf_counter()
    for i in range(n_pods):
        p = pod_obj(i)
        created[p["metadata"]["name"]] = time.perf_counter()
        api.put(PODS, p)
        if i % 50 == 0:
            await asyncio.sleep(0)
    await all_bound.wait()
    elapsed = time.perf_counter() - start
    stop.set()
    await task
    return n_pods / elapsed, [bound[k] - created[k] for k in created]


class _NoEvents:
    async def create(self, *a: Any, **kw: Any) -> Obj:
        return {}


def server(n_pods: int, n_nodes: int) -> tuple[float, list[float]]:
    from tests.fixtures.apiserver import start_api_server

    with tempfile.TemporaryDirectory(prefix="kn-bench-sched-") as tmp, start_api_server(
            Path(tmp), control_plane=True) as srv:
        return asyncio.run(_server(srv.kubeconfig, n_pods, n_nodes))


async def _server(kubeconfig: Path, n_pods: int, n_nodes: int) -> tuple[float, list[float]]:
    from kubenode.client import ApiClient, load_kubeconfig

    client = ApiClient(load_kubeconfig(kubeconfig))
    async with client:
        for i in range(n_nodes):
            await client.create("nodes", node_obj(i))
        created: dict[str, float] = {}
        bound: dict[str, float] = {}
        done = asyncio.Event()

        async def watch() -> None:
            lst = await client.list("pods", namespace="default")
            rv = lst["metadata"]["resourceVersion"]
            while True:
                async for ev in client.watch("pods", namespace="default", resource_version=rv):
                    o = ev.object
                    rv = o["metadata"].get("resourceVersion", rv)
                    if (o.get("spec") or {}).get("nodeName") and o["metadata"]["name"] not in bound:
                        bound[o["metadata"]["name"]] = time.perf_counter()
                        if len(bound) >= n_pods:
                            done.set()
                            return

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.2)
        start = time.perf_counter()
        sem = asyncio.Semaphore(16)

        async def make(i: int) -> None:
            async with sem:
                p = pod_obj(i)
                t = time.perf_counter()
                await client.create("pods", p, namespace="default")
                created[p["metadata"]["name"]] = t

        await asyncio.gather(*(make(i) for i in range(n_pods)))
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.perf_counter() - start
        watcher.cancel()
        return n_pods / elapsed, [bound[k] - created[k] for k in created if k in bound]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench scheduler")
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--mode", choices=["inprocess", "server", "both"], default="both")
    args = ap.parse_args(argv)
    report = Report(
        name="scheduler",
        anchor="kube-scheduler scheduler_perf SchedulingBasic",
        columns=["mode", "nodes", "pods", "pods/s", "p50 ms", "p99 ms"],
    )
    modes = ["inprocess", "server"] if args.mode == "both" else [args.mode]
    for mode in modes:
        if mode == "inprocess":
            rate, lat = asyncio.run(inprocess(args.pods, args.nodes))
        else:
            rate, lat = server(args.pods, args.nodes)
        report.add(
            mode,
            args.nodes,
            args.pods,
            rate,
            percentile(lat, 50) * 1000,
            percentile(lat, 99) * 1000,
        )
    report.notes.append(
        "latency: pod create -> binding observed (includes queueing behind "
        "the other pods created at once)"
    )
    report.emit()
    return 0
