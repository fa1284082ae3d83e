"""`kubenode up` on this machine (kubenode runtime): server, runtime and agent come up in
order, the node turns Ready, a pod runs, Ctrl-C stops every child."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kubenode.kubelet import cm
from tests.fixtures.containerd import pick_subnet
from tests.runtime.harness import conmon_pids, mounts_under

pytestmark = [pytest.mark.root, pytest.mark.slow]

POD = """apiVersion: v1
kind: Pod
metadata: {name: hello}
spec:
  nodeName: up-node
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def test_up_runs_a_pod_and_stops_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bridge = f"knup{secrets.token_hex(3)}"
    cgroot = f"kntest-{secrets.token_hex(3)}"
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.53\n")
    port = free_port()
    subnet = pick_subnet()
    out = open(tmp_path / "up.out", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubenode", "up", "--data-dir", str(data), "--secure-port",
         str(port), "--runtime", "kubenode", "--node-name", "up-node",
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

    def kubectl(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args],
                              capture_output=True, text=True, input=input, timeout=60,
                              check=False)

    def get(*args: str) -> Any:
        r = kubectl("get", *args, "-o", "json")
        return json.loads(r.stdout) if r.returncode == 0 else None

    logs = data / "logs"
    try:
        until(lambda: b"kubenode is up" in (tmp_path / "up.out").read_bytes(), 120,
              "kubenode up", logs)
        assert f"export KUBECONFIG={kubeconfig}" in (tmp_path / "up.out").read_text()
        until(lambda: any(c["type"] == "Ready" and c["status"] == "True" for c in
                          ((get("node", "up-node") or {}).get("status") or {})
                          .get("conditions", [])), 90, "node Ready", logs)
        assert get("node", "up-node")["spec"]["podCIDR"] == subnet
        assert kubectl("apply", "-f", "-", input=POD).returncode == 0
        pod = until(lambda: (lambda p: p if p and p["status"].get("phase") == "Running"
                             else None)(get("pod", "hello")), 90, "pod Running", logs)
        assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(subnet)
        kubectl("delete", "pod", "hello", "--wait=false")
        until(lambda: get("pod", "hello") is None, 60, "pod deleted", logs)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert b"kubenode up: stopped" in (tmp_path / "up.out").read_bytes()
        assert not conmon_pids(data)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
        for pid in conmon_pids(data):
            os.kill(pid, signal.SIGKILL)
        for child in _children_under(data):
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


def _children_under(d: Path) -> list[int]:
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
