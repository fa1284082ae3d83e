"""`kubenode up` end to end with real kubectl: `image: busybox` (pull policy Always) is
pulled from the local registry that `up` starts, a Deployment exposed as a ClusterIP and a
NodePort Service answers from the host through kube-proxy's nftables rules, Ctrl-C stops
every child, and the next `kubenode up` adopts the pod that kept running."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.containerd import pick_subnet
from tests.fixtures.up import UpProcess, kubenode_up, processes_mentioning
from tests.runtime.harness import conmon_pids

pytestmark = [pytest.mark.root, pytest.mark.slow]

UP_RANGE = "10.42.130.0/24"  # this test's pod addresses (a free /26 of it)


def host_address() -> str:
    """The default route's source address (a local, non-loopback node address)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True, check=True).stdout.split()
    return out[out.index("inet") + 1].split("/")[0]


def http_get(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=3) as r:
            return str(r.read().decode())
    except OSError:
        return ""


@pytest.fixture(params=["kubenode"])
def up(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[UpProcess]:
    """`kubenode up --runtime <param>` (not started) with its own ports, names and subnet."""
    with kubenode_up(tmp_path, runtime=request.param, node="up-e2e",
                     subnet=pick_subnet(26, within=UP_RANGE)) as u:
        yield u


def test_up_serves_busybox_from_its_registry_and_services_through_kube_proxy(
        up: UpProcess) -> None:
    u = up
    data = u.data
    kubeconfig = data / "kubeconfig.yaml"
    ok, get, running = u.ok, u.get, u.running
    u.start()
    u.until(lambda: b"kubenode is up" in u.out().read_bytes(), 120, "kubenode up")
    text = u.out().read_text()
    assert f"export KUBECONFIG={kubeconfig}" in text
    assert f"http://127.0.0.1:{u.registry_port}" in text
    u.until(u.node_ready, 60, "node Ready")

    # `image: busybox` -> docker.io/library/busybox:latest, pull policy Always: pulled
    # through the docker.io mirror, i.e. the local registry
    ok("run", "bb", "--image=busybox", "--", "sleep", "3600")
    bb = u.until(lambda: running("bb"), 90, "pod bb Running")
    assert bb["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    reglog = (data / "logs" / "registry.log").read_text()
    assert "GET /v2/library/busybox/manifests/latest" in reglog

    # a Deployment behind a ClusterIP and a NodePort Service, from the host
    ok("create", "deployment", "web", "--image=busybox", "--",
       "sh", "-c", "echo hello > /tmp/i; httpd -f -p 8080 -h /tmp")
    ok("scale", "deployment", "web", "--replicas=2")
    ok("expose", "deployment", "web", "--port", "80", "--target-port", "8080")
    ok("expose", "deployment", "web", "--name", "web-np", "--type", "NodePort",
       "--port", "80", "--target-port", "8080")
    u.until(lambda: (get("deployment", "web") or {}).get("status", {})
            .get("readyReplicas") == 2, 90, "2 web replicas ready")
    svc = get("service", "web")
    vip = svc["spec"]["clusterIP"]
    assert ipaddress.ip_address(vip) in ipaddress.ip_network("10.43.0.0/16")
    pods = get("pods", "-l", "app=web")["items"]
    assert {ipaddress.ip_address(p["status"]["podIP"]) in ipaddress.ip_network(u.subnet)
            for p in pods} == {True}
    u.until(lambda: http_get(f"http://{vip}/i") == "hello\n", 30, f"{vip}:80 answers")
    node_port = get("service", "web-np")["spec"]["ports"][0]["nodePort"]
    addr = host_address()
    u.until(lambda: http_get(f"http://{addr}:{node_port}/i") == "hello\n", 30,
            f"NodePort {addr}:{node_port} answers")

    ok("delete", "service", "web", "web-np")
    ok("delete", "deployment", "web")
    u.until(lambda: not (get("pods", "-l", "app=web") or {"items": [1]})["items"], 60,
            "web pods gone")
    u.until(lambda: http_get(f"http://{vip}/i") == "", 15, "VIP stops answering")

    # Ctrl-C stops every child; the pod's container keeps running
    before = running("bb")["status"]["containerStatuses"][0]
    assert u.interrupt() == 0, u.logs()
    assert b"kubenode up: stopped" in u.out().read_bytes()
    assert processes_mentioning(data) == []
    assert conmon_pids(data), "bb's container should outlive kubenode up"

    # the next `kubenode up` adopts it: same container, no restart
    u.start()
    u.until(lambda: b"kubenode is up" in u.out().read_bytes(), 120, "kubenode up again")
    u.until(u.node_ready, 60, "node Ready again")
    time.sleep(3)  # a kubelet that did not adopt would have replaced the container by now
    after = u.until(lambda: running("bb"), 30, "bb Running")["status"]["containerStatuses"][0]
    assert after["containerID"] == before["containerID"]
    assert after["restartCount"] == 0
    assert after["ready"] is True

    ok("delete", "pod", "bb", "--wait=false")
    u.until(lambda: get("pod", "bb") is None, 60, "bb deleted")
    assert u.interrupt() == 0, u.logs()
    assert processes_mentioning(data) == []
    check = subprocess.run(
        [sys.executable, "-m", "kubenode", "runtime", "--socket", str(data / "run" /
         "runtime.sock"), "--root", str(data / "runtime"), "--state",
         str(data / "run" / "runtime"), "--pod-cidr", u.subnet, "--cni-bridge",
         u.bridge, "--cni-conf-dir", str(data / "net.d"), "check"],
        capture_output=True, text=True, check=False, env=os.environ.copy())
    assert check.returncode == 0, check.stdout + check.stderr
    assert not conmon_pids(data)


@pytest.mark.parametrize("up", ["containerd"], indirect=True)
def test_up_containerd_pulls_busybox_through_its_registry_mirror(
        up: UpProcess) -> None:
    u = up
    u.start()
    u.until(lambda: b"kubenode is up" in u.out().read_bytes(), 120, "kubenode up")
    config = (u.data / "containerd" / "config.toml").read_text()
    assert 'registry.mirrors."docker.io"]' in config
    u.until(u.node_ready, 60, "node Ready")
    u.ok("run", "bb", "--image=busybox", "--", "sleep", "3600")
    bb = u.until(lambda: u.running("bb"), 90, "pod bb Running")
    assert bb["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    # containerd resolves the tag with HEAD on the mirror (?ns=docker.io: for docker.io)
    reglog = (u.data / "logs" / "registry.log").read_text()
    assert "/v2/library/busybox/manifests/latest?ns=docker.io" in reglog
    u.ok("delete", "pod", "bb", "--grace-period=1", "--wait=false")
    u.until(lambda: u.get("pod", "bb") is None, 60, "bb deleted")
    assert u.interrupt() == 0, u.logs()
    assert processes_mentioning(u.data) == []
