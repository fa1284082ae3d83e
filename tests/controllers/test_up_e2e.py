"""End to end on this machine: `kubenode up` (server with its scheduler and controllers,
kubenode runtime, agent), then a Deployment and a Service through kubectl: the
scheduler binds the pods to the real node, the kubelet runs them, the EndpointSlice
controller publishes their IPs as ready, scaling down removes them."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubenode.kubelet import cm
from tests.fixtures.apiserver import free_port
from tests.fixtures.containerd import pick_subnet
from tests.runtime.harness import conmon_pids, mounts_under

pytestmark = [pytest.mark.root, pytest.mark.slow]

APP = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        imagePullPolicy: Never
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""


def until(cond: Callable[[], Any], secs: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + secs
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            tail = "".join(p.read_text()[-2000:] for p in sorted(log.glob("*.log")))
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.3)


def children_under(d: Path) -> list[int]:
    """kubenode processes started with this data dir (left by a failed run)."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        if str(d).encode() in cmd and b"kubenode" in cmd:
            out.append(int(p))
    return out


def test_up_deployment_scheduled_and_published(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bridge = f"knct{secrets.token_hex(3)}"
    cgroot = f"kntest-{secrets.token_hex(3)}"
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.53\n")
    subnet = pick_subnet()
    out = open(tmp_path / "up.out", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubenode", "up", "--data-dir", str(data), "--secure-port",
         str(free_port()), "--runtime", "kubenode", "--node-name", "ctl-node",
         "--pod-cidr", subnet, "--cni-bridge", bridge, "--kubelet-port", "0",
         "--kubelet-healthz-port", "0", "--registry-port", "0",
         "--kubelet-arg", f"cgroup-root={cgroot}",
         "--kubelet-arg", f"resolv-conf={tmp_path / 'resolv.conf'}",
         "--kubelet-arg", "node-ip=127.0.0.1",
         "--kube-proxy-arg", f"nft-table={bridge}",
         "--kube-proxy-arg", "healthz-bind-address=127.0.0.1:0",
         "--kube-proxy-arg", "metrics-bind-address=127.0.0.1:0"],
        stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())
    kubeconfig = data / "kubeconfig.yaml"
    logs = data / "logs"

    def kubectl(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args],
                              capture_output=True, text=True, input=input, timeout=60,
                              check=False)

    def get(*args: str) -> Any:
        r = kubectl("get", *args, "-o", "json")
        return json.loads(r.stdout) if r.returncode == 0 else None

    def running() -> list[Any]:
        pods = [p for p in (get("pods", "-l", "app=web") or {}).get("items") or []
                if not p["metadata"].get("deletionTimestamp")]
        return pods if all(p["status"].get("phase") == "Running" for p in pods) else []

    def ready_ips() -> set[str]:
        slices = (get("endpointslices", "-l", "kubernetes.io/service-name=web") or {}).get(
            "items") or []
        return {e["addresses"][0] for s in slices for e in s.get("endpoints") or []
                if e["conditions"].get("ready")}

    try:
        until(lambda: b"kubenode is up" in (tmp_path / "up.out").read_bytes(), 120,
              "kubenode up", logs)
        until(lambda: any(c["type"] == "Ready" and c["status"] == "True" for c in
                          ((get("node", "ctl-node") or {}).get("status") or {})
                          .get("conditions", [])), 90, "node Ready", logs)
        r = kubectl("apply", "-f", "-", input=APP)
        assert r.returncode == 0, r.stderr
        pods = until(lambda: (lambda ps: ps if len(ps) == 2 else None)(running()), 120,
                     "2 pods Running", logs)
        assert {p["spec"]["nodeName"] for p in pods} == {"ctl-node"}  # bound by the scheduler
        ips = {p["status"]["podIP"] for p in pods}
        assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(subnet) for ip in ips)
        until(lambda: ready_ips() == ips, 60, "EndpointSlice with both pod IPs", logs)
        events = get("events") or {}
        assert any(e["reason"] == "Scheduled" and "to ctl-node" in e["message"]
                   for e in events.get("items") or [])
        rollout = kubectl("rollout", "status", "deployment/web", "--timeout=60s")
        assert "successfully rolled out" in rollout.stdout, rollout.stderr
        assert kubectl("scale", "deployment/web", "--replicas=1").returncode == 0
        until(lambda: len(ready_ips()) == 1, 60, "one endpoint left", logs)
        assert kubectl("delete", "deployment", "web").returncode == 0
        until(lambda: not (get("pods", "-l", "app=web") or {}).get("items"), 90,
              "pods gone with the deployment", logs)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
        for pid in conmon_pids(data):
            os.kill(pid, signal.SIGKILL)
        for child in children_under(data):
            os.kill(child, signal.SIGKILL)
        runc_root = data / "run" / "runtime" / "runc"
        if runc_root.is_dir():
            for cid in os.listdir(runc_root):
                subprocess.run(["runc", "--root", str(runc_root), "delete", "-f", cid],
                               capture_output=True, check=False)
        for mp in sorted(mounts_under(data), key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)
        for family in ("ip", "ip6", "inet"):
            subprocess.run(["nft", "delete", "table", family, bridge], capture_output=True,
                           check=False)
        cm.remove_cgroup(cgroot)
