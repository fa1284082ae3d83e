"""Endpoint map elements written over netlink (kubenode.proxy.nfnetlink) are the ones
nft writes from the same text, a batch is one transaction, and large batches are split
into messages the kernel takes."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator

import pytest

from kubenode.proxy import nfnetlink, nftables

pytestmark = pytest.mark.root


def nft(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(["nft", *args], input=stdin, capture_output=True, text=True,
                          check=True, timeout=60).stdout


def make_table(family: nftables.Family) -> str:
    name = f"kpnl{secrets.token_hex(3)}"
    decls = "".join(f"add map {family.nft} {name} {m}-{copy} {{ {family.decl(d)} }}\n"
                    for m, d in nftables.ENDPOINT_MAPS.items() for copy in ("nft", "nl"))
    nft("-f", "-", stdin=f"add table {family.nft} {name}\n{decls}")
    return name


@pytest.fixture
def table() -> Iterator[str]:
    name = make_table(nftables.IPV4)
    yield name
    subprocess.run(["nft", "delete", "table", "ip", name], capture_output=True)


def elements(table: str, name: str, family: str = "ip") -> list[str]:
    """The map's elements as nft lists them, one per line."""
    out = nft("-j", "list", "map", family, table, name)
    (m,) = [o["map"] for o in json.loads(out)["nftables"] if "map" in o]
    return sorted(json.dumps(e, sort_keys=True) for e in m.get("elem", []))


ADDRESSES = {"IPv4": ["10.0.0.1", "172.16.0.9", "10.1.0.1", "192.168.255.254", "10.1.0.3"],
             "IPv6": ["fd43::1", "2001:db8::ffff:9", "fd42::1:1", "fe80::1", "::ffff:10.1.0.3"]}


@pytest.mark.parametrize("family", ["IPv4", "IPv6"])
def test_elements_match_what_nft_writes(family: str) -> None:
    fam = nftables.FAMILIES[family]
    table = make_table(fam)
    try:
        vip, vip2, *eps = ADDRESSES[family]
        rs = nftables._empty(fam)
        targets = list(zip(eps, (8080, 1, 65535), strict=True))
        nftables._endpoint_elements(rs, "endpoints-tcp", f"{vip} . 80",
                                    fam.pack(vip) + nfnetlink.inet_service(80), targets)
        nftables._endpoint_elements(rs, "endpoints-tcp", f"{vip2} . 65535",
                                    fam.pack(vip2) + nfnetlink.inet_service(65535), targets[:1])
        nftables._endpoint_elements(rs, "nodeport-endpoints-udp", "30053",
                                    nfnetlink.inet_service(30053), targets)
        batch = nfnetlink.ElementBatch(table, fam.nfproto)
        for m, encoded in rs.wire.items():
            text = ", ".join(f"{k} : {v}" for k, v in rs.maps[m].items())
            nft("-f", "-", stdin=f"add element {fam.nft} {table} {m}-nft {{ {text} }}\n")
            batch.add(f"{m}-nl", b"".join(encoded.values()), nftables.packer(fam, m).size)
        batch.commit()
        for m in ("endpoints-tcp", "nodeport-endpoints-udp"):
            written = elements(table, f"{m}-nft", fam.nft)
            assert len(written) == len(rs.maps[m])
            assert elements(table, f"{m}-nl", fam.nft) == written
        assert f"{vip} . 80 . 2 : {eps[2]} . 65535" in nft("list", "map", fam.nft, table,
                                                           "endpoints-tcp-nl")
    finally:
        subprocess.run(["nft", "delete", "table", fam.nft, table], capture_output=True)


def test_refused_batch_applies_nothing(table: str) -> None:
    pack = nftables.packer(nftables.IPV4, "endpoints-tcp").pack
    good = pack(nftables.IPV4.pack("10.0.0.1") + nfnetlink.inet_service(80) + nfnetlink.u32(0),
                nftables.IPV4.pack("10.1.0.1") + nfnetlink.inet_service(8080))
    batch = nfnetlink.ElementBatch(table)
    batch.add("endpoints-tcp-nl", good, len(good))
    batch.add("no-such-map", good, len(good))
    with pytest.raises(nfnetlink.NetlinkError, match="set no-such-map: No such file") as err:
        batch.commit()
    assert err.value.errno == 2
    assert elements(table, "endpoints-tcp-nl") == []  # the good message was rolled back


def test_large_batches_are_split_into_messages(table: str) -> None:
    pack = nftables.packer(nftables.IPV4, "nodeport-endpoints-tcp").pack
    n = 20000  # 640 kB: ~11 messages of at most 64 kB, one sendmsg
    blob = b"".join(pack(nfnetlink.inet_service(30000 + i // 10) + nfnetlink.u32(i % 10),
                         nftables.IPV4.pack(f"10.2.{i // 250}.{i % 250 + 1}")
                         + nfnetlink.inet_service(80)) for i in range(n))
    batch = nfnetlink.ElementBatch(table)
    batch.add("nodeport-endpoints-tcp-nl", blob, len(blob) // n)
    batch.commit()
    assert len(elements(table, "nodeport-endpoints-tcp-nl")) == n
    assert "31999 . 9 : 10.2.79.250 . 80" in nft("list", "map", "ip", table,
                                                 "nodeport-endpoints-tcp-nl")
