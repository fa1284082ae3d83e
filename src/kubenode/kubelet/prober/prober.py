"""Run one probe (upstream prober.go): exec through CRI ExecSync, httpGet (2xx/3xx is
success), tcpSocket (connect), grpc (grpc.health.v1.Health/Check == SERVING).
Returns (ok, output) where output is upstream's failure text for the Unhealthy event."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import grpc

from kubenode.cri.client import CRIError, RuntimeService
from kubenode.kubelet.kuberuntime.lifecycle import _port


def _health_request(service: str) -> bytes:
    raw = service.encode()
    return (b"\x0a" + bytes([len(raw)]) + raw) if raw else b""


async def run_probe(probe: dict[str, Any], *, runtime: RuntimeService, container_id: str,
                    container: dict[str, Any], pod_ip: str) -> tuple[bool, str]:
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "exec" in probe:
            cmd = list(probe["exec"].get("command") or [])
            r = await runtime.exec_sync(container_id, cmd, timeout_seconds=timeout)
            out = (r.stdout + r.stderr).decode(errors="replace")
            if r.exit_code != 0:
                return False, out
            return True, out
        if "httpGet" in probe:
            hg = probe["httpGet"]
            host = hg.get("host") or pod_ip
            port = _port(hg.get("port", 80), container)
            scheme = (hg.get("scheme") or "HTTP").lower()
            path = hg.get("path") or "/"
            if not path.startswith("/"):
                path = "/" + path
            url = f"{scheme}://{host}:{port}{path}"
            headers = {h["name"]: h["value"] for h in hg.get("httpHeaders") or []}
            headers.setdefault("User-Agent", "kube-probe/1.32")
            async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                    s.get(url, headers=headers, ssl=False, allow_redirects=False) as resp:
                if 200 <= resp.status < 400:
                    return True, ""
                return False, f"HTTP probe failed with statuscode: {resp.status}"
        if "tcpSocket" in probe:
            ts = probe["tcpSocket"]
            host = ts.get("host") or pod_ip
            port = _port(ts.get("port"), container)
            try:
                _, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
            except (OSError, TimeoutError) as e:
                return False, f"dial tcp {host}:{port}: connect: {_errtext(e)}"
            w.close()
            return True, ""
        if "grpc" in probe:
            g = probe["grpc"]
            target = f"{pod_ip}:{int(g['port'])}"
            async with grpc.aio.insecure_channel(target) as ch:
                call = ch.unary_unary("/grpc.health.v1.Health/Check",
                                      request_serializer=lambda b: b,
                                      response_deserializer=lambda b: b)
                try:
                    resp = await call(_health_request(g.get("service") or ""), timeout=timeout)
                except grpc.aio.AioRpcError as e:
                    return False, (f"timeout: failed to connect service \"{target}\" within "
                                   f"{timeout:g}s" if e.code() ==
                                   grpc.StatusCode.DEADLINE_EXCEEDED else
                                   f"error: health rpc probe failed: {e.details()}")
            if resp == b"\x08\x01":
                return True, ""
            return False, "service unhealthy (responded with \"NOT_SERVING\")"
    except TimeoutError:
        return False, f"command timed out after {timeout:g}s" if "exec" in probe else \
            "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
    except (CRIError, OSError, aiohttp.ClientError, ValueError) as e:
        return False, str(e)
    return False, "unknown probe type"


def _errtext(e: BaseException) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, TimeoutError):
        return "i/o timeout"
    return str(e)
