"""logs_stats: container log reading, follow latency, and stats/metrics build cost.

- CRI log read (kubenode.kubelet.logs.read_logs) of a ~100 MB CRI log: full read, tailLines=100,
  sinceTime (last 10%), timestamps; the peer in the same run is coreutils on the same file
  (`cut -d' ' -f4-` for the full read: the same prefix stripping without partial joins;
  `tail -n 100 | cut` for the tail).
- follow latency: time from a line appended to the file to the reader writing it (polling
  at the kubelet server's default 0.2 s; upstream kubelet uses fsnotify).
- stats: CgroupStatsProvider.snapshot + summary JSON and /metrics/cadvisor rendering for N
  pods x 2 containers on a cgroup v2 fixture tree (tmpfs), and /stats/summary over HTTPS
  through the kubelet server (p50/p99).
- end to end on a real node (`kubenode server`, runtime, kubelet: bench/pod_start.py's
  node()): `kubectl logs -f --tail=0` of a container writing numbered 100-byte lines as
  fast as it can (lines/s and MB/s delivered vs lines/s written, from the numbers), and
  with 110 pods running: /stats/summary through the API server's node proxy (p50/p99)
  and the kubelet's CPU over 30 s, idle vs scraped every 10 s (/stats/summary,
  /metrics/cadvisor, /metrics/resource, as metrics-server and Prometheus do).
Anchor: upstream kubelet (pkg/kubelet/kuberuntime/logs ReadLogs; /stats/summary and
/metrics/cadvisor served from cAdvisor's cache).
Usage: python -m bench logs_stats [--mb 100] [--pods 100] [--requests 200] [--no-e2e]"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from bench import Report, percentile
from kubenode.kubelet.logs import LogOptions, read_logs
from kubenode.kubelet.server.server import KubeletServer, KubeletServerConfig
from kubenode.stats.cgroups import detect_cgroup_reader
from kubenode.stats.metrics import CadvisorCollector, render
from kubenode.stats.summary import (
    CgroupStatsProvider,
    ContainerInfo,
    NodeStatsConfig,
    PodInfo,
    summary_json,
)

T0 = 1763930000


def _write_log(path: Path, mb: int) -> int:
    line_body = "x" * 80
    lines = 0
    with open(path, "w") as f:
        size = 0
        while size < mb << 20:
            chunk = []
            for _ in range(10000):
                s = T0 + lines // 1000
                chunk.append(f"2025-11-23T20:{(s // 60) % 60:02d}:{s % 60:02d}."
                             f"{lines % 10**9:09d}Z stdout F {lines:08d} {line_body}\n")
                lines += 1
            data = "".join(chunk)
            f.write(data)
            size += len(data)
    return lines


async def _read(path: Path, opts: LogOptions) -> tuple[float, int]:
    n = 0

    async def sink(b: bytes) -> None:
        nonlocal n
        n += len(b)

    t0 = time.perf_counter()
    await read_logs(path, opts, sink)
    return time.perf_counter() - t0, n


def _peer(cmd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(["sh", "-c", cmd], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


async def _follow_latency(path: Path, samples: int) -> list[float]:
    path.write_text("")  # noqa: ASYNC240
    got: asyncio.Queue[float] = asyncio.Queue()

    async def sink(b: bytes) -> None:
        for _ in range(b.count(b"\n")):
            got.put_nowait(time.perf_counter())

    async def running() -> bool:
        return True

    task = asyncio.create_task(read_logs(path, LogOptions(follow=True), sink,
                                         still_running=running, poll_interval=0.2))
    out = []
    try:
        for i in range(samples):
            await asyncio.sleep(0.05 + (i % 7) * 0.03)
            t0 = time.perf_counter()
            with open(path, "a") as f:  # noqa: ASYNC230 - the benchmark's writer
                f.write(f"2025-11-23T20:33:20.{i:09d}Z stdout F line {i}\n")
            out.append(await got.get() - t0)
    finally:
        task.cancel()
    return out


def _v2_tree(root: Path, pods: int) -> list[PodInfo]:
    def w(p: Path, text: str) -> None:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    w(root / "cgroup.controllers", "cpu memory pids\n")
    w(root / "cpu.stat", "usage_usec 1000\nuser_usec 500\nsystem_usec 500\n")
    infos = []
    for i in range(pods):
        uid = f"uid-{i:04d}"
        pod_cg = f"kubepods/besteffort/pod{uid}"
        containers = []
        for rel in (pod_cg, f"{pod_cg}/c{i}a", f"{pod_cg}/c{i}b"):
            d = root / rel
            w(d / "cpu.stat", f"usage_usec {1000 + i}\nuser_usec 1\nsystem_usec 1\n"
                              "nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n")
            w(d / "memory.current", "15925248\n")
            w(d / "memory.stat", "anon 10358784\nfile 4243456\ninactive_file 2904064\n"
                                 "pgfault 8163\npgmajfault 21\n")
            w(d / "memory.events", "oom_kill 0\n")
            w(d / "memory.max", "max\n")
            w(d / "pids.current", "1\n")
            if rel != pod_cg:
                containers.append(ContainerInfo(name=rel.rsplit("/", 1)[1], id=rel[-8:],
                                                image="busybox", cgroup="/" + rel,
                                                start_time=T0))
        infos.append(PodInfo(name=f"pod-{i}", namespace="default", uid=uid, start_time=T0,
                             cgroup="/" + pod_cg, netns_pid=os.getpid(), containers=containers))
    return infos


class _Source:
    def __init__(self, pods: list[PodInfo]) -> None:
        self.pods = pods

    async def pods_for_stats(self) -> list[PodInfo]:
        return self.pods


async def _stats(tmp: Path, pods: int, requests: int) -> dict[str, list[float]]:
    infos = _v2_tree(tmp / "cg", pods)
    provider = CgroupStatsProvider(
        config=NodeStatsConfig(node_name="bench", root_dir=str(tmp)),
        source=_Source(infos), cgroups=detect_cgroup_reader(tmp / "cg"), now=time.time)
    res: dict[str, list[float]] = {"snapshot": [], "summary_json": [], "cadvisor_render": [],
                                   "https_summary": []}
    for _ in range(10):
        t0 = time.perf_counter()
        snap = await provider.snapshot()
        t1 = time.perf_counter()
        summary_json(snap)
        t2 = time.perf_counter()
        render(CadvisorCollector(snap))
        t3 = time.perf_counter()
        res["snapshot"].append(t1 - t0)
        res["summary_json"].append(t2 - t1)
        res["cadvisor_render"].append(t3 - t2)
    server = KubeletServer(config=KubeletServerConfig(
        node_name="bench", address="127.0.0.1", port=0, healthz_port=-1,
        cert_dir=str(tmp / "pki"), anonymous_auth=True), now=time.time, stats=provider)
    await server.start()
    try:
        ctx = ssl.create_default_context(cafile=str(tmp / "pki" / "kubelet.crt"))
        async with aiohttp.ClientSession() as s:
            for _ in range(requests):
                t0 = time.perf_counter()
                async with s.get(f"https://127.0.0.1:{server.port}/stats/summary",
                                 ssl=ctx) as r:
                    await r.read()
                    assert r.status == 200
                res["https_summary"].append(time.perf_counter() - t0)
    finally:
        await server.stop()
    return res


WRITER = ('BEGIN { p = sprintf("%090d", 0); '
          'for (i = 1; ; i++) printf "%09d %s\\n", i, p }')  # 100-byte numbered lines


def _kubectl(kubeconfig: Path, *args: str) -> str:
    return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], check=True,
                          capture_output=True, text=True, timeout=120).stdout


def _wait(cond: Callable[[], bool], secs: float, what: str) -> None:
    deadline = time.monotonic() + secs
    while True:
        try:
            if cond():
                return
        except subprocess.CalledProcessError:
            pass  # not there yet
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _running(kubeconfig: Path, selector: str) -> int:
    out = _kubectl(kubeconfig, "get", "pods", "-l", selector, "-o",
                   "jsonpath={.items[*].status.phase}")
    return out.split().count("Running")


def _newest(kubeconfig: Path) -> tuple[float, int]:
    line = _kubectl(kubeconfig, "logs", "writer", "--tail=1")
    return time.monotonic(), int(line[:9])


def _follow_throughput(kubeconfig: Path, seconds: float) -> tuple[float, float, float]:
    """(lines/s delivered, MB/s delivered, lines/s written) of `kubectl logs -f`."""
    ta, na = _newest(kubeconfig)
    proc = subprocess.Popen(["kubectl", "--kubeconfig", str(kubeconfig), "logs", "-f",
                             "--tail=0", "writer"], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    count = size = 0
    t0 = time.monotonic()
    try:
        for line in proc.stdout:
            count, size = count + 1, size + len(line)
            if time.monotonic() - t0 >= seconds:
                break
    finally:
        proc.kill()
        proc.wait()
    elapsed = time.monotonic() - t0
    tb, nb = _newest(kubeconfig)
    return count / elapsed, size / elapsed / 1e6, (nb - na) / (tb - ta)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _end_to_end(tmp: Path, report: Report) -> None:
    from bench.pod_start import node
    with node("kubenode", tmp) as n:
        kc = n.kubeconfig
        _wait(lambda: "True" in _kubectl(kc, "get", "node", n.name, "-o", "jsonpath="
                                         "{.status.conditions[?(@.type=='Ready')].status}"),
              120, "node Ready")
        _wait(lambda: "default" in _kubectl(kc, "get", "sa", "-o", "name"), 60, "default SA")
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "writer", "labels": {"bench": "writer"}},
               "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
                   "name": "c", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                   "command": ["awk", WRITER]}]}}
        subprocess.run(["kubectl", "--kubeconfig", str(kc), "apply", "-f", "-"], check=True,
                       input=json.dumps(pod), text=True, capture_output=True)
        _wait(lambda: _running(kc, "bench=writer") == 1, 120, "writer Running")
        time.sleep(2)
        lines_s, mb_s, written_s = _follow_throughput(kc, 10.0)
        report.add("kubectl logs -f (lines/s)", "kubenode", lines_s, lines_s / written_s)
        report.add("kubectl logs -f (MB/s)", "kubenode", mb_s, float("nan"))
        report.add("container writes (lines/s)", "container", written_s, 1.0)
        _kubectl(kc, "delete", "pod", "writer", "--grace-period=0", "--wait=true")

        sleeper = {"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "sleepers"},
                   "spec": {"replicas": 110, "selector": {"matchLabels": {"bench": "sleep"}},
                            "template": {"metadata": {"labels": {"bench": "sleep"}},
                                         "spec": {"terminationGracePeriodSeconds": 0,
                                                  "containers": [{
                                                      "name": "c", "image": "busybox",
                                                      "imagePullPolicy": "IfNotPresent",
                                                      "command": ["sleep", "3600"]}]}}}}
        subprocess.run(["kubectl", "--kubeconfig", str(kc), "apply", "-f", "-"], check=True,
                       input=json.dumps(sleeper), text=True, capture_output=True)
        try:
            _wait(lambda: _running(kc, "bench=sleep") == 110, 300, "110 pods Running")
            base = f"/api/v1/nodes/{n.name}/proxy"
            lat = []
            for _ in range(20):
                t0 = time.perf_counter()
                _kubectl(kc, "get", "--raw", f"{base}/stats/summary")
                lat.append(time.perf_counter() - t0)
            report.add("/stats/summary via API server, 110 pods", "kubenode",
                       statistics.median(lat), percentile(lat, 99))
            pid = n.kubelet.pid
            c0 = _cpu_seconds(pid)
            time.sleep(30)
            idle = (_cpu_seconds(pid) - c0) / 30
            c0 = _cpu_seconds(pid)
            t0 = time.monotonic()
            for _ in range(3):
                for path in ("stats/summary", "metrics/cadvisor", "metrics/resource"):
                    _kubectl(kc, "get", "--raw", f"{base}/{path}")
                time.sleep(max(0.0, 10 - (time.monotonic() - t0) % 10))
            scraped = (_cpu_seconds(pid) - c0) / (time.monotonic() - t0)
            report.add("kubelet CPU cores, 110 pods, idle", "kubenode", idle, float("nan"))
            report.add("kubelet CPU cores, 110 pods, scraped every 10 s", "kubenode", scraped,
                       float("nan"))
        finally:
            _kubectl(kc, "delete", "deployment", "sleepers", "--wait=false")
            _wait(lambda: not _kubectl(kc, "get", "pods", "-l", "bench=sleep", "-o",
                                       "name").strip(), 300, "pods deleted")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench logs_stats")
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--no-e2e", dest="e2e", action="store_false",
                    help="skip the real-node part (kubectl logs -f, 110 pods)")
    args = ap.parse_args(argv)
    report = Report(name="logs_stats",
                    anchor="upstream kubelet ReadLogs and /stats/summary, /metrics/cadvisor",
                    columns=["case", "impl", "median_s or rate", "MB/s, p99_s or ratio"])
    with tempfile.TemporaryDirectory(dir="/dev/shm") as td:
        tmp = Path(td)
        log = tmp / "0.log"
        lines = _write_log(log, args.mb)
        size_mb = log.stat().st_size / 1e6
        cases = {
            "full read": (LogOptions(), f"cut -d' ' -f4- {log}"),
            "tailLines=100": (LogOptions(tail_lines=100), f"tail -n 100 {log} | cut -d' ' -f4-"),
            "sinceTime last 10%": (LogOptions(since_time=T0 + lines * 0.9 / 1000), None),
            "timestamps": (LogOptions(timestamps=True), None),
            "limitBytes=1MiB": (LogOptions(limit_bytes=1 << 20), None),
        }
        for case, (opts, peer) in cases.items():
            xs = [asyncio.run(_read(log, opts))[0] for _ in range(3)]
            med = statistics.median(xs)
            report.add(case, "kubenode", med, size_mb / med)
            if peer:
                ps = [_peer(peer) for _ in range(3)]
                report.add(case, "coreutils", statistics.median(ps),
                           size_mb / statistics.median(ps))
        lat = asyncio.run(_follow_latency(tmp / "follow.log", 40))
        report.add("follow latency (poll 0.2 s)", "kubenode", statistics.median(lat),
                   percentile(lat, 99))
        st = asyncio.run(_stats(tmp, args.pods, args.requests))
        for k, xs in st.items():
            report.add(f"{k} ({args.pods} pods x 2 containers)", "kubenode",
                       statistics.median(xs), percentile(xs, 99))
    if args.e2e:
        with tempfile.TemporaryDirectory(prefix="kn-bench-") as d:
            _end_to_end(Path(d), report)
    report.notes.append(f"log: {lines} CRI lines, {size_mb:.1f} MB on tmpfs; 3 runs each; "
                        "read rows give MB/s, follow/stats rows give p99 seconds")
    report.emit()
    return 0
