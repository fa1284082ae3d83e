"""A test network: one bridge (unique name), hand-made netns "pods" with /32 addresses
routed through the host (the host is every pod's gateway, so pod<->pod and pod<->VIP
traffic is routed by the host and crosses its netfilter hooks, not bridged).

Pods serve HTTP with busybox httpd: port 8080 answers /cgi-bin/who with
"<pod> <client ip>", port 8081 answers "alt-<pod> <client ip>"; UDP 5353 echoes
"<pod> <client ip>". Cluster pods live in 10.42.200.0/24 (gateway .1), the off-cluster
client in 10.42.201.0/24 (gateway .1). Everything is removed in `close()`.

IPv6: every pod also has fd42:200::<n> (fd42:201::<n> off-cluster; n as in its IPv4
address) and serves the same CGI on [::]:8086; the host reaches fd43:200::/112 (the
IPv6 service range) through the tun device too. The host does not forward IPv6 (that
would change how it takes router advertisements), so IPv6 tests connect from the host."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).parent
CLUSTER_CIDR = "10.42.200.0/24"
OFF_CLUSTER_CIDR = "10.42.201.0/24"
GW = "10.42.200.1"
OFF_GW = "10.42.201.1"
SERVICE_CIDR = "10.43.200.0/24"
HOST_VIP = "10.43.200.11"
EXTERNAL_CIDR = "10.43.201.0/24"  # external and load-balancer IPs of test services
CLUSTER_CIDR6 = "fd42:200::/64"
SERVICE_CIDR6 = "fd43:200::/112"
GW6, OFF_GW6 = "fd42:200::1", "fd42:201::1"
HTTP6_PORT = 8086


def ipv6_of(ip: str) -> str:
    """A pod's IPv6 address: 10.42.200.11 -> fd42:200::11."""
    _, _, net, host = ip.split(".")
    return f"fd42:{net}::{host}"

CGI = """#!/bin/sh
echo "Content-Type: text/plain"
echo
echo "{name} $REMOTE_ADDR"
"""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check)


@dataclass
class Pod:
    name: str
    ns: str
    ip: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def exec(self, *args: str, timeout: float = 60) -> str:
        return subprocess.run(["ip", "netns", "exec", self.ns, *args], capture_output=True,
                              text=True, check=True, timeout=timeout).stdout

    def http(self, url: str, count: int = 1) -> list[str]:
        out = self.exec(sys.executable, str(HERE / "netclient.py"), "http", url, str(count))
        result: list[str] = json.loads(out)
        return result

    def udp(self, ip: str, port: int, count: int, sport: int) -> list[str]:
        out = self.exec(sys.executable, str(HERE / "netclient.py"), "udp", ip, str(port),
                        str(count), str(sport))
        result: list[str] = json.loads(out)
        return result


class NetEnv:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tag = secrets.token_hex(3)
        self.bridge = f"kp{self.tag}"
        self.dummy = f"kpd{self.tag}"
        self.pods: dict[str, Pod] = {}
        self._n = 0

    def setup(self) -> None:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{GW}/24", "dev", self.bridge)
        sh("ip", "addr", "add", f"{OFF_GW}/24", "dev", self.bridge)
        sh("ip", "-6", "addr", "add", f"{GW6}/64", "dev", self.bridge, "nodad")
        sh("ip", "-6", "addr", "add", f"{OFF_GW6}/64", "dev", self.bridge, "nodad")
        sh("ip", "link", "set", self.bridge, "up")
        # host -> VIP: the route lookup happens before nat OUTPUT rewrites the address and
        # the OUTPUT hook keeps that first device; route the test's service range to a
        # tun device nobody reads so it never points at the uplink (where the nft guard drops it)
        sh("ip", "tuntap", "add", self.dummy, "mode", "tun")
        sh("ip", "link", "set", self.dummy, "up")
        sh("ip", "route", "add", SERVICE_CIDR, "dev", self.dummy, "src", GW)
        sh("ip", "route", "add", EXTERNAL_CIDR, "dev", self.dummy, "src", GW)
        sh("ip", "-6", "route", "add", SERVICE_CIDR6, "dev", self.dummy, "src", GW6)
        Path(f"/proc/sys/net/ipv4/conf/{self.bridge}/send_redirects").write_text("0")
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1")

    def add_pod(self, name: str, ip: str, *, serve: bool = True) -> Pod:
        self._n += 1
        ns = f"kp{self.tag}-{name}"
        host_if = f"kp{self.tag}{self._n}"
        gw = GW if ip.startswith("10.42.200.") else OFF_GW
        gw6 = GW6 if ip.startswith("10.42.200.") else OFF_GW6
        sh("ip", "netns", "add", ns)
        pod = Pod(name, ns, ip)
        self.pods[name] = pod
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", host_if, "master", self.bridge, "up")
        # with br_netfilter a DNAT back to the sender is bridged back out of its own port
        # (as the CNI bridge plugin's hairpinMode does)
        sh("ip", "link", "set", host_if, "type", "bridge_slave", "hairpin", "on")
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "link", "set", "eth0", "up"],
                    ["ip", "addr", "add", f"{ip}/32", "dev", "eth0"],
                    ["ip", "route", "add", gw, "dev", "eth0", "scope", "link"],
                    ["ip", "route", "add", "default", "via", gw, "dev", "eth0"],
                    ["ip", "-6", "addr", "add", f"{ipv6_of(ip)}/128", "dev", "eth0", "nodad"],
                    ["ip", "-6", "route", "add", gw6, "dev", "eth0"],
                    ["ip", "-6", "route", "add", "default", "via", gw6, "dev", "eth0"]):
            sh("ip", "netns", "exec", ns, *cmd)
        # the host sends ICMP redirects for pod->pod/VIP traffic it routes back out of the
        # same bridge; pods must keep using the host as their gateway
        sh("ip", "netns", "exec", ns, "sh", "-c",
           "for f in /proc/sys/net/ipv4/conf/*/accept_redirects; do echo 0 > $f; done")
        if serve:
            for port, label in ((8080, name), (8081, f"alt-{name}")):
                d = self.root / f"{name}-{port}"
                (d / "cgi-bin").mkdir(parents=True)
                (d / "index.html").write_text(label + "\n")
                cgi = d / "cgi-bin/who"
                cgi.write_text(CGI.format(name=label))
                cgi.chmod(0o755)
                pod.procs.append(subprocess.Popen(
                    ["ip", "netns", "exec", ns, "busybox", "httpd", "-f", "-p",
                     f"0.0.0.0:{port}", "-h", str(d)], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL))
            pod.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, "busybox", "httpd", "-f", "-p",
                 f"[::]:{HTTP6_PORT}", "-h", str(self.root / f"{name}-8080")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            pod.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, sys.executable, str(HERE / "udpecho.py"), name,
                 "5353"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return pod

    def wait_ready(self) -> None:
        """Every serving pod answers directly (no proxy involved)."""
        client = next(p for p in self.pods.values() if not p.procs)
        for pod in self.pods.values():
            if not pod.procs:
                continue
            for _ in range(50):
                if client.http(f"http://{pod.ip}:8080/cgi-bin/who")[0].startswith(pod.name):
                    break
            else:
                raise RuntimeError(f"pod {pod.name} does not answer")

    def close(self) -> None:
        for pod in self.pods.values():
            for p in pod.procs:
                p.kill()
                p.wait()
            sh("ip", "netns", "del", pod.ns, check=False)
        sh("ip", "link", "del", self.bridge, check=False)
        sh("ip", "link", "del", self.dummy, check=False)
