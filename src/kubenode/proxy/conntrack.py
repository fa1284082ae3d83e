"""Stale UDP conntrack cleanup (upstream pkg/proxy/conntrack) with the `conntrack` tool.

UDP has no connection teardown, so after an endpoint or a service IP goes away the
kernel keeps DNATing a client's flow to the old backend until the entry expires; the
proxier deletes those entries after each sync. Exit status 1 ("0 flow entries") is not
an error."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from typing import Protocol

log = logging.getLogger(__name__)


class ConntrackCleaner(Protocol):
    async def clear_service_ip(self, ip: str, protocol: str = "udp") -> None: ...
    async def clear_endpoint(self, *, service_ip: str, port: int, endpoint_ip: str,
                             protocol: str = "udp") -> None: ...
    async def clear_node_port(self, *, node_port: int, endpoint_ip: str | None = None,
                              protocol: str = "udp") -> None: ...


class Conntrack:
    """ConntrackCleaner over the conntrack(8) command, for one IP family (conntrack
    matches IPv4 flows unless told `-f ipv6`)."""

    def __init__(self, binary: str = "conntrack", family: str = "IPv4") -> None:
        self.binary = shutil.which(binary) or binary
        self.family_args = ["-f", "ipv6"] if family == "IPv6" else []
        self.deleted = 0  # flows deleted (observable in tests)

    async def _delete(self, *args: str) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary, "-D", *self.family_args, *args, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE)
        except FileNotFoundError:
            log.warning("conntrack not found; stale UDP flows are not flushed")
            return
        _, err = await proc.communicate()
        text = err.decode()
        if proc.returncode not in (0, 1):
            log.warning("conntrack -D %s failed rc=%s err=%s", " ".join(args), proc.returncode,
                        text.strip())
            return
        for line in text.splitlines():
            if "flow entries have been deleted" in line:
                with contextlib.suppress(ValueError, IndexError):
                    self.deleted += int(line.split()[-6])

    async def clear_service_ip(self, ip: str, protocol: str = "udp") -> None:
        await self._delete("-p", protocol, "--orig-dst", ip)

    async def clear_endpoint(self, *, service_ip: str, port: int, endpoint_ip: str,
                             protocol: str = "udp") -> None:
        await self._delete("-p", protocol, "--orig-dst", service_ip, "--orig-port-dst",
                           str(port), "--dst-nat", endpoint_ip)

    async def clear_node_port(self, *, node_port: int, endpoint_ip: str | None = None,
                              protocol: str = "udp") -> None:
        args = ["-p", protocol, "--orig-port-dst", str(node_port)]
        if endpoint_ip:
            args += ["--dst-nat", endpoint_ip]
        await self._delete(*args)
