"""Attach to a container's streams through conmon (the monitor the runtime starts
each container under, with `--socket-dir-path`).

conmon listens on a SOCK_SEQPACKET unix socket `<socket-dir>/<container-id>/attach`.
Each packet it sends starts with the stream it came from (2 stdout, 3 stderr); what
we send goes to the container's stdin (if conmon was started with --stdin), and a
write shutdown closes it (unless conmon has --leave-stdin-open). Resizes are written
to conmon's control FIFO `<bundle>/ctl` as "1 <height> <width>\\n". The session ends
when conmon closes the socket (the container exited) or the client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from kubenode.streaming.runner import InputStream, OutputStream, TerminalSize

STDOUT_PIPE = 2
STDERR_PIPE = 3
RESIZE_EVENT = 1


@dataclass(frozen=True, kw_only=True)
class ConmonAttachPaths:
    socket: Path  # <socket-dir>/<container-id>/attach
    ctl: Path  # <bundle>/ctl


def write_resize(ctl: Path, size: TerminalSize) -> None:
    fd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.write(fd, f"{RESIZE_EVENT} {size.height} {size.width}\n".encode())
    finally:
        os.close(fd)


async def attach_conmon(
    paths: ConmonAttachPaths, *, tty: bool, stdin: InputStream | None,
    stdout: OutputStream | None, stderr: OutputStream | None,
    resize: AsyncIterator[TerminalSize],
) -> None:
    loop = asyncio.get_running_loop()
    if not paths.socket.exists():
        raise KeyError(f"no attach socket {paths.socket}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, str(paths.socket))

        async def pump_stdin() -> None:
            assert stdin is not None
            while chunk := await stdin.read(8192):
                await loop.sock_sendall(sock, chunk)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)

        async def pump_resize() -> None:
            async for size in resize:
                with contextlib.suppress(OSError):
                    write_resize(paths.ctl, size)

        side = [asyncio.create_task(pump_resize())]
        if stdin is not None:
            side.append(asyncio.create_task(pump_stdin()))
        try:
            while packet := await loop.sock_recv(sock, 8193):
                pipe, data = packet[0], packet[1:]
                out = stderr if pipe == STDERR_PIPE and not tty else stdout
                if out is not None and data:
                    await out.write(data)
        finally:
            for t in side:
                t.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            for o in (stdout, stderr):
                if o is not None:
                    with contextlib.suppress(ConnectionError):
                        await o.close()
    finally:
        sock.close()
