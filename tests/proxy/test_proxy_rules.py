"""Rule-set lifecycle for both backends: a restarted proxy leaves exactly one copy of
each rule, partial syncs touch only what changed, `kubenode proxy --cleanup` leaves
nothing behind."""

from __future__ import annotations

import asyncio
import collections
import re
import subprocess
import sys

import pytest

from .conftest import Harness, ep, eps, svc
from .netenv import NetEnv

pytestmark = [pytest.mark.root, pytest.mark.slow]


def dump(h: Harness) -> list[str]:
    """Our rules as lines (nft: the table listing, endpoint maps' generation numbers
    left out so that two generations show as duplicates; iptables: lines naming our
    chains)."""
    if h.kind == "nftables":
        out = subprocess.run(["nft", "list", "table", "ip", f"kpt{h.tag}"],
                             capture_output=True, text=True, check=False).stdout
        out = re.sub(r"(endpoints-[a-z]+)-gen\d+", r"\1", out)
        lines, chain = [], ""
        for raw in out.splitlines():
            line = raw.strip()
            if line.startswith(("chain ", "map ", "set ")):
                chain = line.split()[1]
            elif line and line != "}" and not line.startswith(("type ", "flags ", "timeout ")):
                lines.append(f"{chain}: {line}")
        return lines
    prefix = f"KT{h.tag[:4].upper()}"
    lines = []
    for table in ("nat", "filter"):
        out = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True,
                             check=True).stdout
        lines += [f"{table} {line}" for line in out.splitlines()
                  if prefix in line and not line.startswith("#")]
    return lines


def feed(h: Harness, n: int) -> None:
    for i in range(n):
        h.service(svc(f"svc-{i}", f"10.43.200.{100 + i}", sessionAffinity="ClientIP"
                      if i == 0 else "None"))
        h.slice(eps(f"svc-{i}", [ep("10.42.200.11"), ep("10.42.200.12")]))
    h.service(svc("lonely", "10.43.200.99"))
    # SCTP (no SCTP in some test kernels: the rules must still load)
    h.service(svc("sctp", "10.43.200.98", {"name": "s", "port": 9, "protocol": "SCTP"}))
    h.slice(eps("sctp", [ep("10.42.200.11")], {"name": "s", "port": 99, "protocol": "SCTP"}))


async def test_restart_partial_sync_and_cleanup(proxy: Harness, netenv: NetEnv) -> None:
    feed(proxy, 10)
    await proxy.sync()
    first = dump(proxy)
    assert first
    # rules a restart would duplicate if it appended instead of replacing
    def duplicates(lines: list[str]) -> list[str]:
        return [line for line, n in collections.Counter(lines).items()
                if n > 1]
    assert duplicates(first) == []

    restarted = Harness(proxy.kind, tag=proxy.tag)
    feed(restarted, 10)
    await restarted.sync()
    second = dump(restarted)
    assert sorted(second) == sorted(first)
    assert who(netenv, "10.43.200.103") <= {"a", "b"}

    # a restart that finds objects gone: the full sync deletes their chains
    shrunk = Harness(proxy.kind, tag=proxy.tag)
    feed(shrunk, 9)
    await shrunk.sync()
    def chains(lines: list[str]) -> set[str]:
        return {line.split()[1] for line in lines if line.split()[1].startswith(":")} | {
            line.split(":")[0] for line in lines if ": " in line}
    # iptables: SVC + 2 SEP chains; nftables: none (its endpoints are map elements of
    # the shared lb-tcp-2 chain's map, which svc-1..8 still use)
    gone = 3 if proxy.kind == "iptables" else 0
    assert len(chains(dump(shrunk))) == len(chains(first)) - gone
    assert "svc-9" not in " ".join(dump(shrunk))
    assert "10.43.200.109" not in " ".join(dump(shrunk))
    restarted = Harness(proxy.kind, tag=proxy.tag)
    feed(restarted, 10)
    await restarted.sync()
    assert sorted(dump(restarted)) == sorted(first)

    # partial: one service's endpoints change -> only its chains are rewritten
    restarted.slice(eps("svc-3", [ep("10.42.200.13")]))
    await restarted.sync()
    script = restarted.backend.last_script  # type: ignore[attr-defined]
    assert not restarted.proxier.need_full_sync
    if proxy.kind == "nftables":  # its endpoints' elements: the one left, in lb-tcp-1
        assert "10.43.200.103 . 80 . 0 : 10.42.200.13 . 8080" in script, script
        assert "10.43.200.103 . tcp . 80 : goto lb-tcp-1" in script, script
        assert not any(f"10.43.200.{100 + i} " in script for i in range(10) if i != 3), script
    else:
        assert script.count("-A ") <= 4, script  # new SVC + SEP rules only
    assert who(netenv, "10.43.200.103") == {"c"}
    # a service that appears and one that goes: partial too, and traffic follows
    restarted.delete_service("svc-5")
    restarted.service(svc("svc-new", "10.43.200.120"))
    restarted.slice(eps("svc-new", [ep("10.42.200.12")]))
    await restarted.sync()
    assert who(netenv, "10.43.200.120") == {"b"}
    assert netenv.pods["client"].http("http://10.43.200.105/") != ["a"]

    # kubenode proxy --cleanup removes everything of ours
    run(sys.executable, "-m", "kubenode", "proxy", "--cleanup",
        "--nft-table", f"kpt{proxy.tag}", "--iptables-chain-prefix", f"KT{proxy.tag[:4].upper()}")
    assert dump(restarted) == []
    assert f"KT{proxy.tag[:4].upper()}" not in run("iptables-save")
    assert f"kpt{proxy.tag}" not in run("nft", "list", "tables")


def run(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True,
                          timeout=60).stdout


def who(netenv: NetEnv, vip: str) -> set[str]:
    return {r.split()[0] for r in netenv.pods["client"].http(f"http://{vip}/cgi-bin/who", 6)}


async def test_nftables_failed_full_sync_keeps_the_live_generation(
        proxy: Harness, netenv: NetEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full resync stages the next generation of endpoint maps and switches the rules
    to it in its transaction: when staging fails, the rules keep reading the live maps
    (traffic flows) and the next full sync removes the half-staged ones."""
    if proxy.kind != "nftables":
        pytest.skip("nftables endpoint map generations")
    from kubenode.proxy import nfnetlink

    def both() -> bool:  # 20 requests reach both endpoints (but for 2^-19)
        return {r.split()[0] for r in netenv.pods["client"].http(
            "http://10.43.200.101/cgi-bin/who", 20)} == {"a", "b"}

    feed(proxy, 3)
    await proxy.sync()
    assert both()

    def refused(batch: nfnetlink.ElementBatch) -> None:
        raise nfnetlink.NetlinkError("netlink: refused", 1)

    with monkeypatch.context() as m:
        m.setattr(nfnetlink.ElementBatch, "commit", refused)
        proxy.proxier.need_full_sync = True
        await proxy.proxier.sync()
        assert not proxy.health.healthy() and proxy.proxier.need_full_sync
    listing = run("nft", "list", "table", "ip", f"kpt{proxy.tag}")
    assert "map endpoints-tcp-gen1 " in listing and "map endpoints-tcp-gen2 " in listing
    assert "@endpoints-tcp-gen1" in listing and "@endpoints-tcp-gen2" not in listing
    assert both()

    await proxy.sync()
    assert proxy.health.healthy()
    listing = run("nft", "list", "table", "ip", f"kpt{proxy.tag}")
    assert re.findall(r"map (endpoints-tcp-gen\d+)", listing) == ["endpoints-tcp-gen3"]
    assert "@endpoints-tcp-gen3" in listing
    assert both()


ECHO_SERVER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000))
s.listen(1)
c, _ = s.accept()
while data := c.recv(100):
    c.sendall(data)
"""
# one connection; a line on stdin -> sent, the echo printed (or the error)
ECHO_CLIENT = """
import socket, sys
c = socket.create_connection(("10.43.200.60", 9000), timeout=3)
for line in sys.stdin:
    try:
        c.sendall(line.encode())
        print(c.recv(100).decode().strip() or "closed", flush=True)
    except OSError as err:
        print(f"error: {err}", flush=True)
"""


async def test_restart_keeps_established_connections(proxy: Harness, netenv: NetEnv) -> None:
    """A restarted proxy's first (full) sync rewrites every rule: a TCP connection made
    through a service before it goes on afterwards (its conntrack entry keeps the NAT)."""
    def load(h: Harness) -> None:
        h.service(svc("echo", "10.43.200.60", {"name": "e", "port": 9000,
                                               "protocol": "TCP"}))
        h.slice(eps("echo", [ep("10.42.200.11")], {"name": "e", "port": 9000,
                                                    "protocol": "TCP"}))
        feed(h, 3)

    server = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", netenv.pods["a"].ns, sys.executable, "-c", ECHO_SERVER)
    client = None
    try:
        load(proxy)
        await proxy.sync()
        await asyncio.sleep(0.3)  # the server listening
        client = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", netenv.pods["client"].ns, sys.executable, "-c",
            ECHO_CLIENT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert client.stdin is not None and client.stdout is not None
        stdin, stdout = client.stdin, client.stdout

        async def say(word: str) -> str:
            stdin.write(word.encode() + b"\n")
            async with asyncio.timeout(10):
                return (await stdout.readline()).decode().strip()

        assert await say("before") == "before"
        restarted = Harness(proxy.kind, tag=proxy.tag)
        load(restarted)
        await restarted.sync()
        assert not restarted.proxier.need_full_sync
        assert await say("after") == "after"
        # and again after the periodic full resync of the restarted proxy
        restarted.proxier.need_full_sync = True
        await restarted.sync()
        assert await say("resync") == "resync"
    finally:
        for p in (client, server):
            if p is not None:
                p.kill()
                await p.wait()
