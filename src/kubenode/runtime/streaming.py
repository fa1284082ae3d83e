"""The runtime's streaming server (upstream: kubelet/cri/streaming.Server) and the
runc implementation of `StreamingRuntime`.

`StreamingServer`: the CRI Exec/Attach/PortForward RPCs do not stream; they call
`get_exec_url` / `get_attach_url` / `get_portforward_url`, which validate the request,
store it under a random single-use token (valid 1 minute, at most 1000 in flight) and
return `http://<stream_address>:<port>/{exec,attach,portforward}/<token>`. The client
(kubelet, or kubectl through the API server) then connects there with SPDY or
WebSocket; an unknown, used or expired token gets 404. Invalid requests raise
`StreamingError` carrying the gRPC status code for the RPC to return.
Lifecycle: `start()` binds (port 0 = pick one; `port` tells which) -> serve ->
`stop()` closes the listener and every session.

`RuncStreamingRuntime`:
- exec: `runc --root <root> exec [--tty] <id> <cmd...>`; without a tty the client's
  streams are piped to runc (runc hands the pipes to the process); with a tty runc gets
  a pty of ours as stdio, relays it to the container's terminal and applies our size
  on SIGWINCH (runc accepts --console-socket only with --detach, which would lose the
  exit code). Cancelled (client gone): SIGTERM, then SIGKILL after 2 s.
- attach: conmon's attach socket and ctl FIFO (`kubenode.streaming.attach`), located
  by the injected `attach_paths(container_id)`.
- port_forward: connect to 127.0.0.1:<port> from inside the sandbox's network
  namespace (`sandbox_netns(sandbox_id)` gives its path; None = the host's).

`StreamingRPCs` is the CRI side (Exec, Attach, PortForward) mixed into the runtime's
RuntimeServicer: it resolves the container (must be running) or sandbox and answers
the URL; `new_streaming_server(config=, servicer=)` builds the server for `kubenode
runtime` from its layout (runc root, netns per sandbox, conmon sockets and bundles)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import logging
import os
import pty
import secrets
import signal
import struct
import termios
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import grpc
from aiohttp import web

from kubenode.cri import api_pb2 as pb
from kubenode.runtime.config import RuntimeConfig
from kubenode.runtime.errors import CRIError
from kubenode.streaming import portforward, remotecommand
from kubenode.streaming.attach import ConmonAttachPaths, attach_conmon
from kubenode.streaming.console import PtyMaster
from kubenode.streaming.netns import connect_in_netns
from kubenode.streaming.runner import InputStream, OutputStream, StreamingRuntime, TerminalSize

log = logging.getLogger(__name__)

TOKEN_TTL = 60.0
MAX_IN_FLIGHT = 1000
STREAM_CREATION_TIMEOUT = 30.0

StreamRequest = pb.ExecRequest | pb.AttachRequest | pb.PortForwardRequest


class StreamingError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class _Entry:
    request: StreamRequest
    expires: float


class RequestCache:
    """Single-use tokens for pending streaming requests (upstream: requestCache)."""

    def __init__(self, *, now: Callable[[], float], ttl: float = TOKEN_TTL,
                 max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self._now, self._ttl, self._max = now, ttl, max_in_flight
        self._entries: dict[str, _Entry] = {}

    def insert(self, request: StreamRequest) -> str:
        now = self._now()
        for token in [t for t, e in self._entries.items() if e.expires <= now]:
            del self._entries[token]
        if len(self._entries) >= self._max:
            raise StreamingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                 "maximum number of in-flight requests exceeded")
        token = base64.urlsafe_b64encode(secrets.token_bytes(8)).decode().rstrip("=")
        self._entries[token] = _Entry(request, now + self._ttl)
        return token

    def consume(self, token: str) -> StreamRequest | None:
        entry = self._entries.pop(token, None)
        if entry is None or entry.expires <= self._now():
            return None
        return entry.request


class StreamingServer:
    def __init__(self, *, runtime: StreamingRuntime, address: str = "127.0.0.1",
                 port: int = 0, now: Callable[[], float] = time.monotonic,
                 token_ttl: float = TOKEN_TTL,
                 stream_creation_timeout: float = STREAM_CREATION_TIMEOUT) -> None:
        self._runtime = runtime
        self._address = address
        self.port = port
        self._cache = RequestCache(now=now, ttl=token_ttl)
        self._stream_creation_timeout = stream_creation_timeout
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self._address}]" if ":" in self._address else self._address
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        for kind, handler in (("exec", self._serve_exec), ("attach", self._serve_attach),
                              ("portforward", self._serve_portforward)):
            app.router.add_route("GET", f"/{kind}/{{token}}", handler)
            app.router.add_route("POST", f"/{kind}/{{token}}", handler)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._address, self.port)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None:
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        log.info("streaming server listening url=%s", self.base_url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- CRI side
    def get_exec_url(self, request: pb.ExecRequest) -> str:
        if not request.container_id:
            raise StreamingError(grpc.StatusCode.INVALID_ARGUMENT,
                                 "missing required container_id")
        if request.tty and request.stderr:
            raise StreamingError(grpc.StatusCode.INVALID_ARGUMENT,
                                 "tty and stderr cannot both be true")
        if not (request.stdin or request.stdout or request.stderr):
            raise StreamingError(grpc.StatusCode.INVALID_ARGUMENT,
                                 "one of stdin, stdout, or stderr must be set")
        if not request.cmd:
            raise StreamingError(grpc.StatusCode.INVALID_ARGUMENT, "missing required cmd")
        return f"{self.base_url}/exec/{self._cache.insert(request)}"

    def get_attach_url(self, request: pb.AttachRequest) -> str:
        if not request.container_id:
            raise StreamingError(grpc.StatusCode.INVALID_ARGUMENT,
                                 "missing required container_id")
        if request.tty and request.stderr:
            raise StreamingError(grpc.StatusCode.INVALID_ARGUMENT,
                                 "tty and stderr cannot both be true")
        if not (request.stdin or request.stdout or request.stderr):
            raise StreamingError(grpc.StatusCode.INVALID_ARGUMENT,
                                 "one of stdin, stdout, and stderr must be set")
        return f"{self.base_url}/attach/{self._cache.insert(request)}"

    def get_portforward_url(self, request: pb.PortForwardRequest) -> str:
        if not request.pod_sandbox_id:
            raise StreamingError(grpc.StatusCode.INVALID_ARGUMENT,
                                 "missing required pod_sandbox_id")
        return f"{self.base_url}/portforward/{self._cache.insert(request)}"

    # -- HTTP side
    def _consume(self, request: web.Request, kind: type) -> StreamRequest:
        req = self._cache.consume(request.match_info["token"])
        if req is None or not isinstance(req, kind):
            raise web.HTTPNotFound()
        return req

    async def _serve_exec(self, request: web.Request) -> web.StreamResponse:
        req = self._consume(request, pb.ExecRequest)
        assert isinstance(req, pb.ExecRequest)
        opts = remotecommand.Options(stdin=req.stdin, stdout=req.stdout, stderr=req.stderr,
                                     tty=req.tty)
        cmd = list(req.cmd)

        async def run(stdin: InputStream | None, stdout: OutputStream | None,
                      stderr: OutputStream | None, resize: AsyncIterator[TerminalSize]) -> int:
            return await self._runtime.exec(req.container_id, cmd, tty=req.tty, stdin=stdin,
                                            stdout=stdout, stderr=stderr, resize=resize)

        return await remotecommand.serve(
            request, opts=opts, run=run, cmd=cmd,
            stream_creation_timeout=self._stream_creation_timeout)

    async def _serve_attach(self, request: web.Request) -> web.StreamResponse:
        req = self._consume(request, pb.AttachRequest)
        assert isinstance(req, pb.AttachRequest)
        opts = remotecommand.Options(stdin=req.stdin, stdout=req.stdout, stderr=req.stderr,
                                     tty=req.tty)

        async def run(stdin: InputStream | None, stdout: OutputStream | None,
                      stderr: OutputStream | None,
                      resize: AsyncIterator[TerminalSize]) -> int | None:
            await self._runtime.attach(req.container_id, tty=req.tty, stdin=stdin,
                                       stdout=stdout, stderr=stderr, resize=resize)
            return None

        return await remotecommand.serve(
            request, opts=opts, run=run, stream_creation_timeout=self._stream_creation_timeout)

    async def _serve_portforward(self, request: web.Request) -> web.StreamResponse:
        req = self._consume(request, pb.PortForwardRequest)
        assert isinstance(req, pb.PortForwardRequest)
        sandbox = req.pod_sandbox_id

        async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await self._runtime.port_forward(sandbox, port)

        return await portforward.serve(request, pod=sandbox, connect=connect,
                                       ports=list(req.port))


class RuncStreamingRuntime:
    def __init__(self, *, runc_root: Path, sandbox_netns: Callable[[str], Path | None],
                 attach_paths: Callable[[str], ConmonAttachPaths] | None = None,
                 runc: str = "runc") -> None:
        self._root = runc_root
        self._sandbox_netns = sandbox_netns
        self._attach_paths = attach_paths
        self._runc = runc

    def _check_container(self, container_id: str) -> None:
        if "/" in container_id or not (self._root / container_id / "state.json").exists():
            raise KeyError(f"container {container_id!r} not found")

    async def exec(
        self, container_id: str, cmd: list[str], *, tty: bool, stdin: InputStream | None,
        stdout: OutputStream | None, stderr: OutputStream | None,
        resize: AsyncIterator[TerminalSize],
    ) -> int:
        self._check_container(container_id)
        args = [self._runc, "--root", str(self._root), "exec"]
        if tty:
            return await self._exec_tty([*args, "--tty", container_id, *cmd],
                                        stdin=stdin, stdout=stdout, resize=resize)
        pipe, null = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        proc = await asyncio.create_subprocess_exec(
            *args, container_id, *cmd, stdin=pipe if stdin else null,
            stdout=pipe if stdout else null, stderr=pipe if stderr else null)
        pumps: list[asyncio.Task[None]] = []
        if stdout is not None and proc.stdout is not None:
            pumps.append(asyncio.create_task(_copy_out(proc.stdout.read, stdout)))
        if stderr is not None and proc.stderr is not None:
            pumps.append(asyncio.create_task(_copy_out(proc.stderr.read, stderr)))
        feeder = None
        if stdin is not None and proc.stdin is not None:
            feeder = asyncio.create_task(_copy_in(stdin, proc.stdin))
        try:
            code = await proc.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await asyncio.gather(*pumps, return_exceptions=True)
            return code
        finally:
            await _stop(proc)
            for t in [*pumps, *([feeder] if feeder else [])]:
                t.cancel()
            await asyncio.gather(*pumps, *([feeder] if feeder else []), return_exceptions=True)

    async def _exec_tty(self, argv: list[str], *, stdin: InputStream | None,
                        stdout: OutputStream | None,
                        resize: AsyncIterator[TerminalSize]) -> int:
        master_fd, slave_fd = pty.openpty()
        # a sane default until the client's first resize arrives
        fcntl.ioctl(master_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        master = PtyMaster(master_fd)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=slave_fd, stdout=slave_fd, stderr=slave_fd,
                start_new_session=True)
        finally:
            os.close(slave_fd)

        async def apply_resizes() -> None:
            async for size in resize:
                with contextlib.suppress(OSError):
                    master.resize(size)
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGWINCH)

        tasks = [asyncio.create_task(apply_resizes())]
        out = asyncio.create_task(_copy_out(master.read, stdout)) if stdout else None
        if stdin is not None:
            tasks.append(asyncio.create_task(_copy_in_pty(stdin, master)))
        try:
            code = await proc.wait()
            if out is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await asyncio.gather(out, return_exceptions=True)
            return code
        finally:
            await _stop(proc)
            for t in [*tasks, *([out] if out else [])]:
                t.cancel()
            await asyncio.gather(*tasks, *([out] if out else []), return_exceptions=True)
            master.close()

    async def attach(
        self, container_id: str, *, tty: bool, stdin: InputStream | None,
        stdout: OutputStream | None, stderr: OutputStream | None,
        resize: AsyncIterator[TerminalSize],
    ) -> None:
        if self._attach_paths is None:
            raise RuntimeError("attach is not available without conmon")
        await attach_conmon(self._attach_paths(container_id), tty=tty, stdin=stdin,
                            stdout=stdout, stderr=stderr, resize=resize)

    async def port_forward(
        self, sandbox_id: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        netns = self._sandbox_netns(sandbox_id)
        if netns is None:  # host network
            return await asyncio.open_connection("127.0.0.1", port)
        return await connect_in_netns(netns, port)


class _Servicer(Protocol):
    """What StreamingRPCs needs of the RuntimeServicer it is mixed into."""

    streaming: StreamingServer | None
    containers: Any
    sandboxes: Any


class StreamingRPCs:
    """CRI Exec/Attach/PortForward: validate, resolve ids, answer the streaming URL."""

    streaming: StreamingServer | None = None

    async def _stream_url(self, context: grpc.aio.ServicerContext,
                          make: Callable[[], str]) -> str:
        try:
            if self.streaming is None:
                raise CRIError(grpc.StatusCode.UNAVAILABLE, "streaming server is not running")
            return make()
        except (CRIError, StreamingError) as err:
            await context.abort(err.code, str(err))
        raise AssertionError("unreachable")

    def _server(self) -> StreamingServer:
        assert self.streaming is not None
        return self.streaming

    async def _running_container(self, context: grpc.aio.ServicerContext, ident: str) -> str:
        svc = cast(_Servicer, self)
        try:
            rec = svc.containers.get(ident)
            await svc.containers.refresh(rec)
        except CRIError as err:
            await context.abort(err.code, err.message)
        if rec.state != "running":
            await context.abort(grpc.StatusCode.UNKNOWN,
                                f"container is in CONTAINER_{rec.state.upper()} state")
        return str(rec.id)

    async def Exec(self, request: pb.ExecRequest,
                   context: grpc.aio.ServicerContext) -> pb.ExecResponse:
        req = pb.ExecRequest()
        req.CopyFrom(request)
        if request.container_id:
            req.container_id = await self._running_container(context, request.container_id)
        url = await self._stream_url(context, lambda: self._server().get_exec_url(req))
        return pb.ExecResponse(url=url)

    async def Attach(self, request: pb.AttachRequest,
                     context: grpc.aio.ServicerContext) -> pb.AttachResponse:
        req = pb.AttachRequest()
        req.CopyFrom(request)
        if request.container_id:
            req.container_id = await self._running_container(context, request.container_id)
        url = await self._stream_url(context, lambda: self._server().get_attach_url(req))
        return pb.AttachResponse(url=url)

    async def PortForward(self, request: pb.PortForwardRequest,
                          context: grpc.aio.ServicerContext) -> pb.PortForwardResponse:
        req = pb.PortForwardRequest()
        req.CopyFrom(request)
        if request.pod_sandbox_id:
            try:
                req.pod_sandbox_id = cast(_Servicer, self).sandboxes.get(request.pod_sandbox_id).id
            except CRIError as err:
                await context.abort(err.code, err.message)
        url = await self._stream_url(context, lambda: self._server().get_portforward_url(req))
        return pb.PortForwardResponse(url=url)


def new_streaming_server(*, config: RuntimeConfig, servicer: Any) -> StreamingServer:
    """The streaming server of `kubenode runtime`, over the servicer's layout and
    sandboxes (`servicer.layout`, `servicer.sandboxes`)."""
    layout = servicer.layout

    def sandbox_netns(sandbox_id: str) -> Path | None:
        try:
            rec = servicer.sandboxes.get(sandbox_id)
        except CRIError as err:
            raise KeyError(err.message) from err
        return Path(rec.netns) if rec.netns else None

    def attach_paths(container_id: str) -> ConmonAttachPaths:
        return ConmonAttachPaths(socket=layout.socket_dir / container_id / "attach",
                                 ctl=layout.bundle(container_id) / "ctl")

    runtime = RuncStreamingRuntime(runc_root=layout.runc_root, sandbox_netns=sandbox_netns,
                                   attach_paths=attach_paths, runc=servicer.runc.binary)
    return StreamingServer(runtime=runtime, address=config.stream_address,
                           port=config.stream_port)


async def _copy_out(read: Callable[[int], Awaitable[bytes]], out: OutputStream) -> None:
    with contextlib.suppress(ConnectionError):
        while chunk := await read(65536):
            await out.write(chunk)
        await out.close()


async def _copy_in(src: InputStream, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while chunk := await src.read(65536):
            dst.write(chunk)
            await dst.drain()
    dst.close()


async def _copy_in_pty(src: InputStream, master: PtyMaster) -> None:
    with contextlib.suppress(OSError):
        while chunk := await src.read(65536):
            await master.write(chunk)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        async with asyncio.timeout(2):
            await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
