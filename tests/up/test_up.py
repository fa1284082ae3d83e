"""`kubenode up` end to end with real kubectl: `image: busybox` (pull policy Always) is
pulled from the local registry that `up` starts, a Deployment exposed as a ClusterIP and a
NodePort Service answers from the host through kube-proxy's nftables rules, Ctrl-C stops
every child, and the next `kubenode up` adopts the pod that kept running."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kubenode.kubelet import cm
from tests.runtime.harness import conmon_pids, mounts_under

pytestmark = [pytest.mark.root, pytest.mark.slow]

UP_RANGE = "10.42.130.0/24"  # this test's pod addresses (a free /26 of it)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pick_subnet() -> str:
    """A /26 of UP_RANGE that no route uses yet (parallel copies of the suite)."""
    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True,
                            check=False).stdout
    used = []
    for line in routes.splitlines():
        with contextlib.suppress(ValueError):
            used.append(ipaddress.ip_network(line.split()[0], strict=False))
    candidates = list(ipaddress.ip_network(UP_RANGE).subnets(new_prefix=26))
    random.shuffle(candidates)
    for c in candidates:
        if not any(c.overlaps(n) for n in used if n.prefixlen > 8):
            return str(c)
    raise RuntimeError(f"no free /26 left in {UP_RANGE}")


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


@dataclass(kw_only=True)
class UpProcess:
    tmp: Path
    argv: list[str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.tmp / "data"

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.procs[-1]

    def out(self) -> Path:
        return self.tmp / f"up{len(self.procs)}.out"

    def start(self) -> None:
        n = len(self.procs) + 1
        with open(self.tmp / f"up{n}.out", "wb") as out:
            self.procs.append(subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                               env=os.environ.copy()))

    def logs(self) -> str:
        parts = [self.out().read_text(errors="replace")[-3000:]]
        parts += [f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:]
                  for p in sorted((self.data / "logs").glob("*.log"))]
        return "\n".join(parts)

    def until(self, cond: Callable[[], Any], secs: float, what: str) -> Any:
        deadline = time.monotonic() + secs
        while True:
            v = cond()
            if v:
                return v
            if self.proc.poll() is not None:
                raise AssertionError(f"kubenode up exited waiting for {what}\n{self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")
            time.sleep(0.3)

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", "--kubeconfig", str(self.data / "kubeconfig.yaml"),
                               *args], capture_output=True, text=True, timeout=60, check=False)

    def ok(self, *args: str) -> str:
        r = self.kubectl(*args)
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}\n{self.logs()}"
        return r.stdout

    def get(self, *args: str) -> Any:
        r = self.kubectl("get", *args, "-o", "json")
        return json.loads(r.stdout) if r.returncode == 0 else None

    def running(self, name: str) -> Any:
        pod = self.get("pod", name)
        return pod if pod and pod["status"].get("phase") == "Running" else None

    def node_ready(self) -> bool:
        node = self.get("node", "up-e2e") or {}
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in (node.get("status") or {}).get("conditions", []))

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(60)


def remove_cni_masquerade(subnet: str) -> None:
    """The bridge plugin's ipMasq rules (nat POSTROUTING -s <pod IP> -j CNI-...) of pods
    in subnet whose CNI DEL never ran (the test failed before the pods were deleted)."""
    net = ipaddress.ip_network(subnet)
    rules = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True,
                           check=False).stdout
    for line in rules.splitlines():
        parts = line.split()
        if parts[:4] != ["-A", "POSTROUTING", "-s", parts[3] if len(parts) > 3 else ""]:
            continue
        with contextlib.suppress(ValueError):
            if ipaddress.ip_network(parts[3], strict=False).subnet_of(net):  # type: ignore[arg-type]
                chain = parts[parts.index("-j") + 1]
                subprocess.run(["sh", "-c", f"iptables -t nat {line.replace('-A', '-D', 1)}"],
                               capture_output=True, check=False)
                for op in ("-F", "-X"):
                    subprocess.run(["iptables", "-t", "nat", op, chain], capture_output=True,
                                   check=False)


def remove_netns_in(subnet: str) -> None:
    """containerd's pod netns (/run/netns/cni-*) holding an address of subnet."""
    net = ipaddress.ip_network(subnet)
    d = Path("/run/netns")
    for ns in sorted(d.iterdir()) if d.is_dir() else []:
        if not ns.name.startswith("cni-"):
            continue
        addrs = subprocess.run(["ip", "-n", ns.name, "-4", "-o", "addr"], capture_output=True,
                               text=True, check=False).stdout.split()
        if any(a.split("/")[0] != a and ipaddress.ip_address(a.split("/")[0]) in net
               for a in addrs if "." in a and a[0].isdigit()):
            subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, check=False)


def pod_monitors(d: Path) -> list[int]:
    """conmon (kubenode runtime) and containerd-shim processes of containers under d."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (cmd and (cmd[0].endswith(b"conmon") or b"containerd-shim" in cmd[0])
                and any(str(d).encode() in a for a in cmd)):
            out.append(int(p))
    return out


def processes_mentioning(d: Path) -> list[tuple[int, str]]:
    """Processes whose command line names d, other than conmon (containers outlive up)."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and not cmd[0].endswith(b"conmon") and any(str(d).encode() in a for a in cmd):
            out.append((int(p), b" ".join(cmd).decode(errors="replace")))
    return out


@pytest.fixture(params=["kubenode"])
def up(request: pytest.FixtureRequest,
       tmp_path: Path) -> Iterator[tuple[UpProcess, dict[str, str]]]:
    """`kubenode up --runtime <param>` (not started) with its own ports, names and subnet."""
    names = {
        "bridge": f"knup{secrets.token_hex(3)}",
        "cgroot": f"kntest-{secrets.token_hex(3)}",
        "subnet": pick_subnet(),
        "registry_port": str(free_port()),
    }
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.53\n")
    data = tmp_path / "data"
    argv = [sys.executable, "-m", "kubenode", "up", "--data-dir", str(data),
            "--secure-port", str(free_port()), "--registry-port", names["registry_port"],
            "--runtime", request.param, "--node-name", "up-e2e", "--pod-cidr", names["subnet"],
            "--cni-bridge", names["bridge"], "--kubelet-port", "0",
            "--kubelet-healthz-port", "0",
            "--kubelet-arg", f"cgroup-root={names['cgroot']}",
            "--kubelet-arg", f"resolv-conf={tmp_path / 'resolv.conf'}",
            "--kube-proxy-arg", f"nft-table={names['bridge']}",
            "--kube-proxy-arg", "healthz-bind-address=127.0.0.1:0",
            "--kube-proxy-arg", "metrics-bind-address=127.0.0.1:0"]
    u = UpProcess(tmp=tmp_path, argv=argv)
    try:
        yield u, names
    finally:
        if u.procs and u.proc.poll() is None:  # failed midway: let the kubelet tear pods down
            u.kubectl("delete", "pods", "--all", "--force", "--grace-period=0")
            deadline = time.monotonic() + 20
            while pod_monitors(data) and time.monotonic() < deadline:
                time.sleep(0.5)
        for p in u.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for pid, _ in processes_mentioning(data):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in conmon_pids(data):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for runc_root in (data / "run" / "runtime" / "runc", data / "containerd" / "runc"):
            if not runc_root.is_dir():
                continue
            for cid in os.listdir(runc_root):
                subprocess.run(["runc", "--root", str(runc_root), "delete", "-f", cid],
                               capture_output=True, check=False)
        for mp in sorted(mounts_under(data), key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", names["bridge"]], capture_output=True, check=False)
        for family in ("ip", "ip6", "inet"):
            subprocess.run(["nft", "delete", "table", family, names["bridge"]],
                           capture_output=True, check=False)
        cm.remove_cgroup(names["cgroot"])
        remove_cni_masquerade(names["subnet"])
        remove_netns_in(names["subnet"])


def test_up_serves_busybox_from_its_registry_and_services_through_kube_proxy(
        up: tuple[UpProcess, dict[str, str]]) -> None:
    u, names = up
    data = u.data
    kubeconfig = data / "kubeconfig.yaml"
    ok, get, running = u.ok, u.get, u.running
    u.start()
    u.until(lambda: b"kubenode is up" in u.out().read_bytes(), 120, "kubenode up")
    text = u.out().read_text()
    assert f"export KUBECONFIG={kubeconfig}" in text
    assert f"http://127.0.0.1:{names['registry_port']}" in text
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
    assert {ipaddress.ip_address(p["status"]["podIP"]) in ipaddress.ip_network(names["subnet"])
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
         str(data / "run" / "runtime"), "--pod-cidr", names["subnet"], "--cni-bridge",
         names["bridge"], "--cni-conf-dir", str(data / "net.d"), "check"],
        capture_output=True, text=True, check=False, env=os.environ.copy())
    assert check.returncode == 0, check.stdout + check.stderr
    assert not conmon_pids(data)


@pytest.mark.parametrize("up", ["containerd"], indirect=True)
def test_up_containerd_pulls_busybox_through_its_registry_mirror(
        up: tuple[UpProcess, dict[str, str]]) -> None:
    u, _ = up
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
