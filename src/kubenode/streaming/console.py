"""Terminals for exec and attach.

`PtyMaster` wraps a pty master for the event loop: `read()` returns b"" once the
slave side is gone (EIO); `resize()` applies TIOCSWINSZ. `ConsoleSocket` receives a
pty master that runc sends over a unix socket with SCM_RIGHTS (`--console-socket`;
runc allows that only with `--detach`, so exec in the foreground uses a pty of ours
as runc's stdio instead: runc relays it to the container's terminal and forwards
resizes on SIGWINCH)."""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import fcntl
import os
import socket
import struct
import termios
from pathlib import Path

from kubenode.streaming.runner import TerminalSize


def set_winsize(fd: int, size: TerminalSize) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size.height, size.width, 0, 0))


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    fut: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, _wake, fut)
    try:
        await fut
    finally:
        loop.remove_reader(fd)


class ConsoleSocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(1)
        self._sock.setblocking(False)

    async def receive(self) -> int:
        loop = asyncio.get_running_loop()
        conn, _ = await loop.sock_accept(self._sock)
        with conn:
            conn.setblocking(False)
            fds = array.array("i")
            while True:
                await _readable(loop, conn.fileno())
                try:
                    msg, ancdata, _flags, _addr = conn.recvmsg(
                        4096, socket.CMSG_SPACE(fds.itemsize))
                except BlockingIOError:
                    continue
                for level, ctype, data in ancdata:
                    if level == socket.SOL_SOCKET and ctype == socket.SCM_RIGHTS:
                        fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
                if fds:
                    for extra in fds[1:]:
                        os.close(extra)
                    return fds[0]
                if not msg:
                    raise RuntimeError("console socket closed without a terminal")

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class PtyMaster:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._closed = False

    async def _wait(self, add: str, remove: str) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        getattr(loop, add)(self.fd, _wake, fut)
        try:
            await fut
        finally:
            getattr(loop, remove)(self.fd)

    async def read(self, n: int = 65536) -> bytes:
        while not self._closed:
            try:
                return os.read(self.fd, n)
            except BlockingIOError:
                await self._wait("add_reader", "remove_reader")
            except OSError as err:
                if err.errno == errno.EIO:
                    return b""
                raise
        return b""

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._closed:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                await self._wait("add_writer", "remove_writer")

    def resize(self, size: TerminalSize) -> None:
        if not self._closed:
            set_winsize(self.fd, size)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self.fd)
