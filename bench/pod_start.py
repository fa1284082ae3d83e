"""pod_start: pod startup latency through the kubelet (pod handed to the kubelet ->
status Running with its container running), for N pods created at once, on containerd
1.6 and on `kubenode runtime`, side by side; plus the time to tear them all down.

Anchor: upstream's pod startup SLI (kubelet_pod_start_sli_duration_seconds; SLO: p99
<= 5s for stateless pods whose images are present), measured the same way (no image pull,
no scheduling, no API server in the path).
Usage: python -m bench pod_start [--pods N] [--runtime containerd|kubenode|both]"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import Report, percentile
from kubenode.cri.client import Connection, RemoteImageService, RemoteRuntimeService
from kubenode.kubelet import cm
from kubenode.kubelet.config import KubeletConfig
from kubenode.kubelet.container import PodUID
from kubenode.kubelet.kubelet import Kubelet

REPO = Path(__file__).resolve().parents[1]


def _pod(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"bench-{i}", "namespace": "default",
                         "uid": str(uuid.uuid4()), "resourceVersion": "1"},
            "spec": {"restartPolicy": "Always", "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": "busybox",
                                     "imagePullPolicy": "IfNotPresent",
                                     "command": ["sleep", "3600"]}]}}


async def _measure(endpoint: str, n: int, tmp: Path) -> tuple[list[float], float]:
    cgroot = f"knbench-{secrets.token_hex(3)}"
    (tmp / "resolv.conf").write_text("nameserver 127.0.0.53\n")
    cfg = KubeletConfig(node_name="bench", root_dir=tmp / "kubelet", pod_logs_dir=tmp / "logs",
                        cgroup_root=cgroot, resolv_conf=tmp / "resolv.conf")
    conn = Connection(endpoint=endpoint)
    k = Kubelet(config=cfg, runtime=RemoteRuntimeService(conn=conn),
                images=RemoteImageService(conn=conn), host_ips=["127.0.0.1"])
    k.pleg.relist_period = 0.5
    task = asyncio.create_task(k.run())
    await k.ready.wait()
    pods = [_pod(i) for i in range(n)]
    started: dict[str, float] = {}
    t0 = time.monotonic()
    k.update_source("bench", pods)
    try:
        while len(started) < n and time.monotonic() - t0 < 300:
            for p in pods:
                uid = p["metadata"]["uid"]
                st = k.status_manager.get_pod_status(PodUID(uid)) or {}
                cs = st.get("containerStatuses") or [{}]
                if uid not in started and st.get("phase") == "Running" and \
                        "running" in cs[0].get("state", {}):
                    started[uid] = time.monotonic() - t0
            await asyncio.sleep(0.05)
        t1 = time.monotonic()
        k.update_source("bench", [])
        while time.monotonic() - t1 < 300:
            if not k.pods and all(k.pod_workers.is_finished(u) for u in k.pod_workers.known()):
                break
            await asyncio.sleep(0.05)
        teardown = time.monotonic() - t1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        rm = k.runtime_manager
        for uid, (ns, name) in (await rm.list_pod_uids()).items():
            st = await rm.get_pod_status(uid, name, ns)
            await rm.kill_pod(None, st, 0)
            await rm.remove_pod(st)
        await conn.close()
        cm.remove_cgroup(cgroot)
    return sorted(started.values()), teardown


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench pod_start")
    ap.add_argument("--pods", type=int, default=10)
    ap.add_argument("--runtime", choices=["containerd", "kubenode", "both"], default="both")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from tests.fixtures.containerd import pick_subnet, run_containerd
    from tests.fixtures.images import build_layout
    from tests.runtime.harness import RuntimeProc

    report = Report(name="pod_start",
                    anchor="kubelet pod startup SLI (p99 <= 5s, images present)",
                    columns=["runtime", "pods", "p50_s", "p90_s", "max_s", "all_running_s",
                             "teardown_s"])
    runtimes = ["containerd", "kubenode"] if args.runtime == "both" else [args.runtime]
    for rt in runtimes:
        with tempfile.TemporaryDirectory(prefix="kn-bench-") as d:
            tmp = Path(d)
            if rt == "containerd":
                with run_containerd() as c:
                    lat, down = asyncio.run(_measure(c.endpoint, args.pods, tmp))
            else:
                layouts = [build_layout(k, tmp / k) for k in ("busybox", "pause")]
                proc = RuntimeProc(layouts=[b.path for b in layouts],
                                   pod_cidr=pick_subnet())
                try:
                    proc.start()
                    lat, down = asyncio.run(_measure(f"unix://{proc.socket}", args.pods, tmp))
                finally:
                    proc.cleanup()
        if not lat:
            report.add(rt, args.pods, float("nan"), float("nan"), float("nan"),
                       float("nan"), down)
            continue
        report.add(rt, args.pods, percentile(lat, 50), percentile(lat, 90), lat[-1],
                   lat[-1] if len(lat) == args.pods else float("nan"), down)
    report.notes.append("latency = update_source() -> status Running with the container "
                        "running; all pods handed over at once; 2-core VM")
    report.emit()
    return 0
