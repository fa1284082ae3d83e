"""API server throughput and latency: 10,000 pod creates, a full and a paginated list,
and watch fan-out (100 watchers x 1,000 updates, delivery latency p50/p99).

Upstream anchor: the Kubernetes API call latency SLOs measured by perf-tests'
clusterloader2 (mutating calls p99 <= 1 s; LIST of a namespace p99 <= 5 s at 30 s for
cluster scope; watch latency p99 <= 5 s for pod startup), which kube-apiserver meets on
clusters of 5,000 nodes / 150,000 pods.

    python -m bench apiserver [--pods 10000] [--watchers 100] [--updates 1000]
                              [--storage sqlite|etcd --etcd-servers URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import Report, percentile


def _ssl(data_dir: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(data_dir / "pki" / "ca.crt"))
    ctx.load_cert_chain(data_dir / "pki" / "admin.crt", data_dir / "pki" / "admin.key")
    return ctx


def pod(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"bench-{i:05d}",
                         "labels": {"app": "bench", "shard": str(i % 10)}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                                     "resources": {"requests": {"cpu": "10m"}}}]}}


async def create_pods(s: aiohttp.ClientSession, url: str, n: int,
                      concurrency: int = 32) -> tuple[float, list[float]]:
    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []

    async def one(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            async with s.post(f"{url}/api/v1/namespaces/default/pods", json=pod(i)) as r:
                assert r.status == 201, await r.text()
                await r.read()
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - t0, lat


async def list_pods(s: aiohttp.ClientSession, url: str, limit: int) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    total = pages = 0
    cont = ""
    while True:
        params = {"limit": str(limit)} if limit else {}
        if cont:
            params["continue"] = cont
        async with s.get(f"{url}/api/v1/namespaces/default/pods", params=params) as r:
            body = await r.json()
        total += len(body["items"])
        pages += 1
        cont = body["metadata"].get("continue", "")
        if not cont:
            break
    return time.perf_counter() - t0, total, pages


async def watch_fanout(s: aiohttp.ClientSession, url: str, watchers: int,
                       updates: int) -> tuple[float, list[float]]:
    async with s.post(f"{url}/api/v1/namespaces/default/configmaps",
                      json={"metadata": {"name": "bench-watch"}, "data": {"i": "-1"}}) as r:
        rv = (await r.json())["metadata"]["resourceVersion"]
    sent: dict[str, float] = {}
    latencies: list[float] = []
    done = asyncio.Event()
    finished = 0

    async def watcher() -> None:
        nonlocal finished
        params = {"watch": "1", "resourceVersion": rv, "fieldSelector":
                  "metadata.name=bench-watch", "timeoutSeconds": "600"}
        got = 0
        async with s.get(f"{url}/api/v1/namespaces/default/configmaps", params=params,
                         timeout=aiohttp.ClientTimeout(total=None)) as r:
            async for line in r.content:
                ev = json.loads(line)
                i = ev["object"]["data"]["i"]
                now = time.perf_counter()
                if i in sent:
                    latencies.append(now - sent[i])
                got += 1
                if got >= updates:
                    break
        finished += 1
        if finished == watchers:
            done.set()

    tasks = [asyncio.create_task(watcher()) for _ in range(watchers)]
    await asyncio.sleep(1.0)
    t0 = time.perf_counter()
    for i in range(updates):
        sent[str(i)] = time.perf_counter()
        async with s.patch(f"{url}/api/v1/namespaces/default/configmaps/bench-watch",
                           data=json.dumps({"data": {"i": str(i)}}),
                           headers={"Content-Type": "application/merge-patch+json"}) as r:
            assert r.status == 200, await r.text()
            await r.read()
    await asyncio.wait_for(done.wait(), timeout=600)
    elapsed = time.perf_counter() - t0
    for t in tasks:
        t.cancel()
    return elapsed, latencies


async def run(url: str, data_dir: Path, args: argparse.Namespace, report: Report) -> None:
    conn = aiohttp.TCPConnector(ssl=_ssl(data_dir), limit=args.watchers + 64)
    async with aiohttp.ClientSession(connector=conn) as s:
        elapsed, lat = await create_pods(s, url, args.pods)
        report.add("create pods", args.pods, elapsed, args.pods / elapsed,
                   percentile(lat, 50) * 1000, percentile(lat, 99) * 1000)
        elapsed, total, _ = await list_pods(s, url, 0)
        report.add("list pods (full)", total, elapsed, total / elapsed, elapsed * 1000,
                   elapsed * 1000)
        elapsed, total, pages = await list_pods(s, url, 500)
        report.add(f"list pods (limit=500, {pages} pages)", total, elapsed, total / elapsed,
                   elapsed / pages * 1000, elapsed / pages * 1000)
        elapsed, lat = await watch_fanout(s, url, args.watchers, args.updates)
        n = len(lat)
        report.add(f"watch {args.watchers}x{args.updates} updates", n, elapsed, n / elapsed,
                   percentile(lat, 50) * 1000, percentile(lat, 99) * 1000)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench apiserver")
    p.add_argument("--pods", type=int, default=10_000)
    p.add_argument("--watchers", type=int, default=100)
    p.add_argument("--updates", type=int, default=1_000)
    p.add_argument("--storage", default="sqlite")
    p.add_argument("--etcd-servers", default="")
    args = p.parse_args(argv)
    from tests.fixtures.apiserver import start_api_server
    report = Report(name="apiserver", anchor="perf-tests clusterloader2 API call latency SLOs",
                    columns=["operation", "objects/events", "seconds", "per second",
                             "p50 ms", "p99 ms"])
    extra = ["--storage", args.storage]
    if args.etcd_servers:
        extra += ["--etcd-servers", args.etcd_servers]
    with tempfile.TemporaryDirectory(prefix="kubenode-bench-") as tmp, \
            start_api_server(Path(tmp), extra_args=extra) as srv:
        asyncio.run(run(srv.url, srv.data_dir, args, report))
    report.notes.append(f"storage={args.storage}; one kubenode server process, 2 cores; "
                        "creates with 32 concurrent clients; watch latency = patch sent -> "
                        "event received by each watcher")
    report.emit()
    return 0
