"""Lifecycle hook handlers (upstream pkg/kubelet/lifecycle/handlers.go): postStart and
preStop with exec (CRI ExecSync), httpGet (to the pod IP unless host is set) and sleep.
Returns "" on success or the failure message upstream would put in the event."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from kubenode.cri.client import CRIError, RuntimeService


def _port(port: Any, container: dict[str, Any]) -> int:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"couldn't find port: {port} in {container.get('name')}")


async def run_handler(handler: dict[str, Any], *, runtime: RuntimeService, container_id: str,
                      container: dict[str, Any], pod_ip: str, timeout_s: float) -> str:
    try:
        if "exec" in handler:
            cmd = list(handler["exec"].get("command") or [])
            r = await runtime.exec_sync(container_id, cmd, timeout_seconds=max(1.0, timeout_s))
            if r.exit_code != 0:
                out = (r.stdout + r.stderr).decode(errors="replace")
                return (f"Exec lifecycle hook ({cmd}) for Container \"{container['name']}\" "
                        f"failed - error: command '{' '.join(cmd)}' exited with "
                        f"{r.exit_code}: {out}, message: \"{out}\"")
            return ""
        if "httpGet" in handler:
            hg = handler["httpGet"]
            host = hg.get("host") or pod_ip
            port = _port(hg.get("port", 80), container)
            scheme = (hg.get("scheme") or "HTTP").lower()
            path = hg.get("path") or "/"
            if not path.startswith("/"):
                path = "/" + path
            headers = {h["name"]: h["value"] for h in hg.get("httpHeaders") or []}
            url = f"{scheme}://{host}:{port}{path}"
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s, \
                    s.get(url, headers=headers, ssl=False) as resp:
                if resp.status >= 400:
                    return f"HTTP lifecycle hook ({path}) for Container \"{container['name']}\" " \
                           f"failed - error: HTTP status {resp.status}"
            return ""
        if "sleep" in handler:
            await asyncio.sleep(min(float(handler["sleep"].get("seconds", 0)), timeout_s))
            return ""
    except (CRIError, OSError, aiohttp.ClientError, TimeoutError, ValueError) as e:
        return f"lifecycle hook for Container \"{container['name']}\" failed - error: {e}"
    return "unknown lifecycle handler"
