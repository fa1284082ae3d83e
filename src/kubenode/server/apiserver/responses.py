"""Encoding and decoding of REST bodies (upstream apiserver/pkg/endpoints/handlers/
responsewriters and negotiation): JSON answers and `Status` failures, the Accept header
(JSON, YAML, `as=Table`), and request bodies (JSON, YAML, protobuf) up to 3 MiB.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import yaml
from aiohttp import web

from kubenode.api import errors
from kubenode.server.apiserver import protobuf

JSON = "application/json"
PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
    "application/apply-patch+cbor": "apply",
}
MAX_BODY = 3 * 1024 * 1024


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    body = json.dumps(obj, separators=(",", ":"))
    return web.Response(text=body, status=status, content_type=JSON, headers=headers)


def raw_list_response(lst: dict[str, Any]) -> web.Response:
    """A list whose items are already JSON (Store.list(raw=True))."""
    head = json.dumps({k: v for k, v in lst.items() if k != "items"},
                      separators=(",", ":")).encode()
    body = b"".join((head[:-1], b',"items":[', b",".join(lst["items"]), b"]}"))
    return web.Response(body=body, status=200, content_type=JSON)


def status_response(err: errors.StatusError) -> web.Response:
    headers = {}
    if err.retry_after:
        headers["Retry-After"] = str(err.retry_after)
    return json_response(err.to_status(), status=err.code, headers=headers)


def success_status(details: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Success"}
    if details:
        out["details"] = details
    return out


def truthy(v: str | None) -> bool:
    return v is not None and v.lower() in ("1", "true", "yes")


def wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    for part in accept.split(","):
        params = {p.split("=", 1)[0].strip(): p.split("=", 1)[1].strip()
                  for p in part.split(";")[1:] if "=" in p}
        if params.get("as") == "Table" and params.get("g", "meta.k8s.io") == "meta.k8s.io":
            return True
        if part.strip().split(";")[0] in ("application/json", "*/*", "application/*", ""):
            return False
    return False


def check_accept(request: web.Request) -> None:
    accept = request.headers.get("Accept", "")
    if not accept:
        return
    for part in accept.split(","):
        mt = part.split(";")[0].strip()
        if mt in ("application/json", "*/*", "application/*", "application/yaml",
                  "application/json-seq", "application/vnd.kubernetes.protobuf;stream=watch"):
            return
        if mt == "application/json" or mt.endswith("+json"):
            return
    raise errors.not_acceptable(
        "only the following media types are accepted: application/json, application/yaml")


async def read_body(request: web.Request) -> Any:
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise errors.too_large("Request entity too large: limit is 3145728")
    if not raw.strip():
        return None
    ctype = request.content_type
    if "protobuf" in ctype:
        source = request.app.get("protobuf")
        if source is not None:
            try:
                return await asyncio.to_thread(protobuf.decode_body, source, raw)
            except protobuf.NoDescriptorsError:
                pass
            except (ValueError, LookupError) as err:
                raise errors.bad_request(f"error decoding protobuf body: {err}") from err
        raise errors.unsupported_media_type(
            "the body of the request was in an unknown format - accepted media types "
            "include: application/json, application/yaml")
    try:
        if "yaml" in ctype:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as err:
        raise errors.bad_request(f"couldn't get version/kind; json parse error: {err}") from err
