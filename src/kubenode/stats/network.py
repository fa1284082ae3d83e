"""Per-network-namespace interface counters (cAdvisor reads /proc/<pid>/net/dev of a
process inside the pod's netns: that file shows the namespace of the reading task's
target, so no setns is needed).

Contract: `read_net_dev(pid)` -> list[InterfaceStats] (loopback excluded unless asked);
`parse_net_dev(text)` is the pure parser. A vanished pid raises FileNotFoundError.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class InterfaceStats:
    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def parse_net_dev(text: str, *, include_loopback: bool = False) -> list[InterfaceStats]:
    out: list[InterfaceStats] = []
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        if not sep:
            continue
        name = name.strip()
        if name == "lo" and not include_loopback:
            continue
        f = [int(x) for x in rest.split()]
        if len(f) < 16:
            continue
        out.append(InterfaceStats(name=name, rx_bytes=f[0], rx_packets=f[1], rx_errors=f[2],
                                  rx_dropped=f[3], tx_bytes=f[8], tx_packets=f[9],
                                  tx_errors=f[10], tx_dropped=f[11]))
    return out


def read_net_dev(pid: int | str, *, proc_root: str | os.PathLike[str] = "/proc",
                 include_loopback: bool = False) -> list[InterfaceStats]:
    text = (Path(proc_root) / str(pid) / "net" / "dev").read_text()
    return parse_net_dev(text, include_loopback=include_loopback)
