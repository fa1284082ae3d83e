"""`kubenode proxy` against the real API server (tests/fixtures/apiserver.py): informers
-> change trackers -> sync, healthz and metrics, switching --proxy-mode cleans the
other backend, --cleanup."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from kubenode.up import free_port

from .conftest import ep, eps, svc
from .netenv import CLUSTER_CIDR, NetEnv

pytestmark = [pytest.mark.root, pytest.mark.slow]

VIP = "10.43.200.40"


@contextmanager
def proxy_process(kubeconfig: str, tag: str, mode: str,
                  log: Path) -> Iterator[dict[str, int]]:
    ports = {"healthz": free_port(), "metrics": free_port()}
    logf = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubenode", "proxy", "--kubeconfig", kubeconfig,
         "--hostname-override", "node-a", "--proxy-mode", mode,
         "--nft-table", f"kpt{tag}", "--iptables-chain-prefix", f"KT{tag[:4].upper()}",
         "--cluster-cidr", CLUSTER_CIDR, "--iptables-min-sync-period", "100ms",
         "--healthz-bind-address", f"127.0.0.1:{ports['healthz']}",
         "--metrics-bind-address", f"127.0.0.1:{ports['metrics']}"],
        env=os.environ, stdout=subprocess.DEVNULL, stderr=logf)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"kubenode proxy exited: {log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports['healthz']}/healthz",
                                            timeout=2) as r:
                    if r.status == 200 and json.loads(r.read())["lastUpdated"]:
                        break
            except (OSError, urllib.error.URLError):
                pass
            assert time.monotonic() < deadline, f"never healthy: {log.read_text()}"
            time.sleep(0.2)
        yield ports
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        logf.close()


def kubectl_apply(api_server: Any, obj: dict[str, Any]) -> None:
    api_server.kubectl("apply", "-f", "-", input=json.dumps(obj))


def until(fn: Any, want: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_kubenode_proxy_against_api_server(api_server: Any, netenv: NetEnv,
                                           tmp_path: Path) -> None:
    tag = secrets.token_hex(3)
    log = tmp_path / "proxy.log"
    client = netenv.pods["client"]

    def who() -> set[str]:
        return {r.split()[0] for r in client.http(f"http://{VIP}/cgi-bin/who", 12)}

    s = svc("web", VIP)
    del s["metadata"]["resourceVersion"]
    kubectl_apply(api_server, s)
    kubectl_apply(api_server, eps("web", [ep("10.42.200.11"), ep("10.42.200.12")]))
    try:
        with proxy_process(str(api_server.kubeconfig), tag, "iptables", log):
            assert until(who, {"a", "b"}) == {"a", "b"}
        with proxy_process(str(api_server.kubeconfig), tag, "nftables", log) as ports:
            # switching modes removed the iptables rules
            saved = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
            assert f"KT{tag[:4].upper()}" not in saved
            assert until(who, {"a", "b"}) == {"a", "b"}
            # a watch event moves the traffic
            moved = eps("web", [ep("10.42.200.13")])
            moved["metadata"]["annotations"] = {
                "endpoints.kubernetes.io/last-change-trigger-time":
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            kubectl_apply(api_server, moved)
            assert until(who, {"c"}) == {"c"}
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics") as r:
                metrics = r.read().decode()
            for name in ("kubeproxy_sync_proxy_rules_duration_seconds_bucket",
                         "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                         "kubeproxy_network_programming_duration_seconds_bucket",
                         "kubeproxy_sync_proxy_rules_endpoint_changes_total"):
                assert name in metrics, name
            count = next(line for line in metrics.splitlines() if line.startswith(
                "kubeproxy_network_programming_duration_seconds_count"))
            assert float(count.split()[-1]) >= 1
            api_server.kubectl("delete", "service", "web")
            assert until(lambda: client.http(f"http://{VIP}/cgi-bin/who"), ["timeout"]) == [
                "timeout"]
    finally:
        subprocess.run([sys.executable, "-m", "kubenode", "proxy", "--cleanup", "--nft-table",
                        f"kpt{tag}", "--iptables-chain-prefix", f"KT{tag[:4].upper()}"],
                       env=os.environ, check=True, timeout=60)
    assert f"kpt{tag}" not in subprocess.run(["nft", "list", "tables"], capture_output=True,
                                             text=True).stdout
