"""The `runc` command line, always with our own `--root` (never the host's /run/runc).

Container creation goes through conmon (conmon.py), which runs `runc create`; everything
else (start, kill, delete, state, exec, update) is a direct call here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUNC = "/usr/sbin/runc"


class RuncError(Exception):
    pass


@dataclass(frozen=True, kw_only=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False


def _clean(err: bytes) -> str:
    """runc logs `time=... level=error msg="..."`; keep the message."""
    text = err.decode(errors="replace").strip()
    msgs = []
    for line in text.splitlines():
        if 'msg="' in line:
            m = line.split('msg="', 1)[1].rsplit('"', 1)[0]
            msgs.append(m.replace('\\"', '"'))
        elif line.strip():
            msgs.append(line.strip())
    return "; ".join(msgs) or text


def _kill_pidfile(pid_file: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


class Runc:
    def __init__(self, *, root: Path, binary: str = RUNC) -> None:
        self.root = root
        self.binary = binary

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), *args]

    async def _run(self, *args: str, stdin: bytes | None = None) -> bytes:
        proc = await asyncio.create_subprocess_exec(
            *self.argv(*args), stdin=asyncio.subprocess.PIPE if stdin is not None else None,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate(stdin)
        if proc.returncode != 0:
            raise RuncError(_clean(err) or f"runc {args[0]} exited {proc.returncode}")
        return out

    async def start(self, cid: str) -> None:
        await self._run("start", cid)

    async def state(self, cid: str) -> dict[str, Any] | None:
        try:
            out = await self._run("state", cid)
        except RuncError as err:
            if "does not exist" in str(err) or "not exist" in str(err):
                return None
            raise
        data: dict[str, Any] = json.loads(out)
        return data

    async def kill(self, cid: str, sig: int = signal.SIGTERM, *, all_procs: bool = False) -> None:
        args = ["kill"] + (["--all"] if all_procs else []) + [cid, str(int(sig))]
        try:
            await self._run(*args)
        except RuncError as err:
            # stopped or gone already: the caller waits for the exit file anyway
            if not any(s in str(err) for s in ("not running", "does not exist",
                                               "process already finished", "no such process")):
                raise

    async def delete(self, cid: str, *, force: bool = False) -> None:
        try:
            await self._run("delete", *(["--force"] if force else []), cid)
        except RuncError as err:
            if "does not exist" not in str(err):
                raise

    async def update(self, cid: str, resources: dict[str, Any]) -> None:
        await self._run("update", "--resources", "-", cid, stdin=json.dumps(resources).encode())

    async def list_all(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        out = await self._run("list", "--format", "json")
        data = json.loads(out or b"null")
        return list(data or [])

    async def exec_sync(self, cid: str, cmd: list[str], *, timeout_s: float | None,
                        pid_file: Path) -> ExecResult:
        proc = await asyncio.create_subprocess_exec(
            *self.argv("exec", "--pid-file", str(pid_file), cid, *cmd),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
        except TimeoutError:
            _kill_pidfile(pid_file)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            out, err = await proc.communicate()
            return ExecResult(exit_code=-1, stdout=out, stderr=err, timed_out=True)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(pid_file)
        assert proc.returncode is not None
        return ExecResult(exit_code=proc.returncode, stdout=out, stderr=err)
