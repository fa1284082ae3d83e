"""Request info (upstream apiserver/pkg/endpoints/request.RequestInfo): which resource,
verb, namespace, name and subresource a URL path and HTTP method address."""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACE_SUBRESOURCES = {"status", "finalize"}


@dataclass(frozen=True, kw_only=True)
class RequestInfo:
    is_resource: bool
    path: str
    verb: str
    group: str = ""
    version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    subpath: str = ""  # after the subresource (proxy paths)


def parse_request(method: str, path: str, *, watch: bool) -> RequestInfo:
    method = method.upper()
    nonresource_verb = {"GET": "get", "HEAD": "get", "POST": "post", "PUT": "put",
                        "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())
    parts = [p for p in path.strip("/").split("/") if p != ""]
    if not parts or parts[0] not in ("api", "apis"):
        return RequestInfo(is_resource=False, path=path, verb=nonresource_verb)
    if parts[0] == "api":
        if len(parts) < 2:
            return RequestInfo(is_resource=False, path=path, verb=nonresource_verb)
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 3:
            return RequestInfo(is_resource=False, path=path, verb=nonresource_verb)
        group, version, rest = parts[1], parts[2], parts[3:]
    if not rest:
        return RequestInfo(is_resource=False, path=path, verb=nonresource_verb)
    verb = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update",
            "PATCH": "patch", "DELETE": "delete"}.get(method, "")
    if rest[0] == "watch":
        verb = "watch"
        rest = rest[1:]
    namespace = ""
    if rest and rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    if not rest:
        return RequestInfo(is_resource=False, path=path, verb=nonresource_verb)
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    subpath = "/".join(rest[3:])
    if not name:
        if verb == "get":
            verb = "watch" if watch else "list"
        elif verb == "delete":
            verb = "deletecollection"
    elif verb == "get" and watch:
        verb = "watch"
    return RequestInfo(is_resource=True, path=path, verb=verb, group=group, version=version,
                       namespace=namespace, resource=resource, subresource=subresource,
                       name=name, subpath=subpath)
