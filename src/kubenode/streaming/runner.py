"""The seam between the streaming protocols and a container runtime.

Servers (the runtime's streaming server, later the kubelet) speak SPDY or WebSocket
to the client and call a `StreamingRuntime` with plain byte streams:

- `stdin` is an `InputStream` (asyncio.StreamReader fits): `read(n)` returns b"" at
  end of input (client closed stdin). None when the client did not ask for stdin.
- `stdout`/`stderr` are `OutputStream`s: `await write(data)`, `await close()` (EOF to
  the client). None when not requested (stderr is always None with a tty: a terminal
  has one output).
- `resize` yields `TerminalSize`s as the client sends them (tty only; otherwise it
  ends at once). The runtime applies each to the terminal.

`exec` returns the command's exit code; `attach` returns when the container's output
ends; `port_forward` returns a TCP connection to 127.0.0.1:port inside the pod's
network namespace. Errors: `KeyError` for an unknown container/sandbox, `OSError` for
failures to connect, `RuntimeError` for anything else; the servers turn them into the
protocol's error stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class TerminalSize:
    width: int
    height: int


class InputStream(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


class OutputStream(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class StreamingRuntime(Protocol):
    async def exec(
        self, container_id: str, cmd: list[str], *, tty: bool, stdin: InputStream | None,
        stdout: OutputStream | None, stderr: OutputStream | None,
        resize: AsyncIterator[TerminalSize],
    ) -> int: ...

    async def attach(
        self, container_id: str, *, tty: bool, stdin: InputStream | None,
        stdout: OutputStream | None, stderr: OutputStream | None,
        resize: AsyncIterator[TerminalSize],
    ) -> None: ...

    async def port_forward(
        self, sandbox_id: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...


async def no_resize() -> AsyncIterator[TerminalSize]:
    """The resize source of a session without a terminal: ends at once."""
    return
    yield  # pragma: no cover - makes this an async generator
