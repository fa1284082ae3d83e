"""conmon, the per-container monitor: it runs `runc create`, holds the container's
stdio, writes the CRI log file (k8s-file driver: `<RFC3339Nano> stdout|stderr F|P line`),
writes the exit code to `<exit-dir>/<id>` and `<persist-dir>/exit` when the container
dies, and detaches (double fork) so a restart of `kubenode runtime` never kills a
container.

Handshake: conmon reports the container pid (or runc's error) as one JSON line
`{"data": PID}` / `{"data": -1, "message": "..."}` on the sync pipe (_OCI_SYNCPIPE).
Log rotation: writing "2 0 0\n" to the bundle's `ctl` FIFO makes conmon reopen its log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubenode.runtime.runc import Runc

CONMON = "conmon"


class ConmonError(Exception):
    pass


@dataclass(frozen=True, kw_only=True)
class ConmonPaths:
    bundle: Path
    log_path: Path
    exit_dir: Path
    socket_dir: Path
    persist_dir: Path

    @property
    def pidfile(self) -> Path:
        return self.bundle / "pidfile"

    @property
    def conmon_pidfile(self) -> Path:
        return self.bundle / "conmon.pid"


def binary() -> str:
    return shutil.which(CONMON) or f"/usr/bin/{CONMON}"


async def create(*, cid: str, name: str, runc: Runc, paths: ConmonPaths, stdin: bool = False,
                 stdin_once: bool = False, tty: bool = False, log_size_max: int = -1,
                 timeout_s: float = 60.0) -> int:
    """`runc create` under a new conmon; returns the container's init pid."""
    for d in (paths.exit_dir, paths.socket_dir, paths.persist_dir, paths.log_path.parent):
        d.mkdir(parents=True, exist_ok=True)
    argv = [
        binary(), "--api-version", "1", "-c", cid, "-u", cid, "-n", name,
        "-r", runc.binary, "--runtime-arg", "--root", "--runtime-arg", str(runc.root),
        "-b", str(paths.bundle), "-p", str(paths.pidfile),
        "--conmon-pidfile", str(paths.conmon_pidfile),
        "-l", f"k8s-file:{paths.log_path}", "--log-level", "error",
        "--exit-dir", str(paths.exit_dir), "--socket-dir-path", str(paths.socket_dir),
        "--persist-dir", str(paths.persist_dir), "--syslog",
    ]
    if log_size_max > 0:
        argv += ["--log-size-max", str(log_size_max)]
    if stdin:
        argv.append("-i")
        if not stdin_once:
            argv.append("--leave-stdin-open")
    if tty:
        argv.append("-t")
    r, w = os.pipe()
    try:
        env = dict(os.environ, _OCI_SYNCPIPE=str(w))
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, pass_fds=(w,), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True)
        os.close(w)
        w = -1
        # the parent exits once the monitor has daemonized; the pipe stays with the monitor
        if await proc.wait() != 0:
            raise ConmonError(f"conmon exited with status {proc.returncode}")
        line = await asyncio.wait_for(_read_line(r), timeout_s)
    finally:
        if w >= 0:
            os.close(w)
        if r >= 0:
            os.close(r)
    if not line:
        raise ConmonError("conmon exited before reporting the container pid")
    try:
        msg = json.loads(line)
    except ValueError as e:
        raise ConmonError(f"bad message from conmon: {line!r}") from e
    pid = int(msg.get("data", -1))
    if pid <= 0:
        raise ConmonError(_runc_message(msg.get("message", "")))
    return pid


def _runc_message(text: str) -> str:
    text = text.strip()
    if 'msg="' in text:
        text = text.split('msg="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
    return text or "container create failed"


async def _read_line(fd: int) -> str:
    """One line from the sync pipe, read by the event loop (no thread per container)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(fd), "rb", buffering=0))
    try:
        return (await reader.readline()).decode(errors="replace").strip()
    finally:
        transport.close()


def reopen_log(bundle: Path) -> None:
    ctl = bundle / "ctl"
    try:
        fd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as err:
        raise ConmonError(f"container monitor is not running: {err.strerror}") from err
    try:
        os.write(fd, b"2 0 0\n")
    finally:
        os.close(fd)


class Monitors:
    """Liveness of conmon processes through pidfds: after the first look (pid file, then
    /proc/<pid>/stat to be sure it is conmon), a monitor's pidfd sits in one epoll set,
    which turns it readable when the process exits; one `epoll_wait(0)` per check updates
    them all. No file reads and no confusion with a process that reused the pid:
    the runtime lists every container each second for the kubelet's PLEG, so this is
    the hot path. Keyed by container (or sandbox) id; `pidfile(id)` says where conmon
    wrote its pid."""

    def __init__(self, *, pidfile: Callable[[str], Path]) -> None:
        self._pidfile = pidfile
        self._epoll = select.epoll()
        self._fds: dict[str, int] = {}
        self._ids: dict[int, str] = {}

    def alive(self, ident: str) -> bool:
        self._reap()
        if ident in self._fds:
            return True
        fd = self._open(self._pidfile(ident))
        if fd is None:
            return False
        self._fds[ident], self._ids[fd] = fd, ident
        self._epoll.register(fd, select.EPOLLIN)
        return True

    def _reap(self) -> None:
        for fd, _ in self._epoll.poll(0):
            self.forget(self._ids[fd])

    @staticmethod
    def _open(pidfile: Path) -> int | None:
        if not pid_alive(pidfile):
            return None
        try:
            fd = os.pidfd_open(int(pidfile.read_text().strip()))
        except (OSError, ValueError):
            return None
        if not pid_alive(pidfile):  # exited (and maybe reused) between the two looks
            os.close(fd)
            return None
        return fd

    def forget(self, ident: str) -> None:
        fd = self._fds.pop(ident, None)
        if fd is not None:
            self._ids.pop(fd, None)
            self._epoll.unregister(fd)
            os.close(fd)


def pid_alive(pidfile: Path) -> bool:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return False
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
        os.kill(pid, 0)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        comm, _, rest = stat.partition(") ")
        return comm.endswith("(conmon") and not rest.startswith(("Z", "X"))
    return False
