"""What every REST handler shares (upstream handlers.RequestScope): the server, decoding
and pruning of bodies (fieldValidation Strict/Warn/Ignore), list options from the query,
and answering an object (JSON or Table, with Warning headers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from kubenode.api import errors
from kubenode.api.fields import parse_field_selector
from kubenode.api.labels import parse_selector
from kubenode.server.apiserver import tables
from kubenode.server.apiserver.managedfields import manager_for
from kubenode.server.apiserver.registry.decode import prune_unknown, type_error
from kubenode.server.apiserver.registry.resources import ResourceInfo
from kubenode.server.apiserver.registry.store import ListOptions

if TYPE_CHECKING:
    from kubenode.server.apiserver.server import APIServer
from kubenode.server.apiserver.responses import json_response, read_body, wants_table


class RequestScope:
    def __init__(self, server: APIServer) -> None:
        self.server = server

    def manager(self, request: web.Request) -> str:
        """The field manager of a write: ?fieldManager=, else from the User-Agent."""
        return manager_for(request.query.get("fieldManager", ""),
                           request.headers.get("User-Agent", ""))

    def respond_object(self, request: web.Request, res: ResourceInfo, obj: dict[str, Any],
                       status: int = 200) -> web.Response:
        if wants_table(request) and obj.get("kind") == res.kind:
            return json_response(tables.to_table(res, [obj], {"resourceVersion": obj.get(
                "metadata", {}).get("resourceVersion", "")}, include=request.query.get(
                "includeObject", "Metadata"), now=self.server.clock()), status=status)
        warnings = request.get("warnings") or []
        headers = {"Warning": ", ".join(f'299 - "{w}"' for w in warnings)} if warnings else None
        return json_response(obj, status=status, headers=headers)

    # ------------------------------------------------------------------ decoding
    async def decode_object(self, request: web.Request, res: ResourceInfo) -> Any:
        body = await read_body(request)
        if body is None:
            return None
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request was in an unknown format")
        self.check_gvk(body, res)
        self.prune(request, body, res)
        return body

    def check_gvk(self, body: dict[str, Any], res: ResourceInfo) -> None:
        kind, api_version = body.get("kind"), body.get("apiVersion")
        if kind and kind != res.kind:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({res.api_version})" if api_version and api_version != res.api_version
                else f"the kind in the data ({kind}) does not match the expected kind "
                     f"({res.kind})")
        if api_version and api_version != res.api_version:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({res.api_version})")

    def prune(self, request: web.Request, body: dict[str, Any], res: ResourceInfo) -> None:
        unknown = prune_unknown(body, res.model)
        bad = type_error(body, res.model)
        if bad:
            raise errors.bad_request(
                f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
                f"{bad}")
        if not unknown:
            return
        mode = request.query.get("fieldValidation", "Warn")
        if mode == "Strict":
            msgs = ", ".join(f'unknown field "{u}"' for u in unknown)
            raise errors.bad_request(
                f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
                f"strict decoding error: {msgs}")
        if mode != "Ignore":
            request["warnings"] = [f'unknown field \\"{u}\\"' for u in unknown]

    def list_options(self, request: web.Request) -> ListOptions:
        q = request.query
        try:
            ls = parse_selector(q.get("labelSelector", ""))
        except ValueError as err:
            raise errors.bad_request(f"unable to parse requirement: {err}") from err
        try:
            fs = parse_field_selector(q.get("fieldSelector", ""))
        except ValueError as err:
            raise errors.bad_request(str(err)) from err
        try:
            limit = int(q.get("limit", "0") or 0)
        except ValueError as err:
            raise errors.bad_request("limit must be an integer") from err
        return ListOptions(label_selector=ls, field_selector=fs, limit=max(limit, 0),
                           continue_token=q.get("continue", ""),
                           resource_version=q.get("resourceVersion", ""),
                           resource_version_match=q.get("resourceVersionMatch", ""))
