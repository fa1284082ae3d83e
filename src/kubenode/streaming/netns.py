"""Connect to a TCP port inside a network namespace (for port-forward).

A short-lived thread enters the namespace with setns(CLONE_NEWNET), creates and
connects the socket (a socket stays in the namespace it was made in), and the thread
ends; the event loop then uses the connected socket. The thread never returns to a
pool, so no other work can run in the wrong namespace."""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import threading
from pathlib import Path

CLONE_NEWNET = 0x40000000


def _setns(fd: int, nstype: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _connect_in(netns: Path, host: str, port: int, timeout: float) -> socket.socket:
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd, CLONE_NEWNET)
    finally:
        os.close(fd)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_in_netns(
    netns: Path, port: int, *, host: str = "127.0.0.1", connect_timeout: float = 10.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[socket.socket] = loop.create_future()

    def deliver(sock: socket.socket | None, err: BaseException | None) -> None:
        if fut.done():
            if sock is not None:
                sock.close()
        elif err is not None:
            fut.set_exception(err)
        else:
            fut.set_result(sock)  # type: ignore[arg-type]

    def work() -> None:
        try:
            sock = _connect_in(netns, host, port, connect_timeout)
        except Exception as err:  # handed to the loop as the future's exception
            loop.call_soon_threadsafe(deliver, None, err)
            return
        loop.call_soon_threadsafe(deliver, sock, None)

    threading.Thread(target=work, name=f"netns-connect:{port}", daemon=True).start()
    sock = await fut
    return await asyncio.open_connection(sock=sock, limit=1 << 20)
