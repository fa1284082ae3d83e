"""OpenAPI documents generated from the official `kubernetes` python package's models:
/openapi/v3 (index), /openapi/v3/<api/v1|apis/g/v> (OpenAPI 3.0 per group-version) and
/openapi/v2 (Swagger 2.0 JSON; a protobuf-only request gets 406).

Definitions are named as upstream (`io.k8s.api.core.v1.Pod`,
`io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta`), carry descriptions, required fields,
`x-kubernetes-group-version-kind` and the strategic-merge-patch extensions; operations
carry the GVK extension and the `fieldValidation`/`dryRun`/`fieldManager` parameters
kubectl checks for server-side field validation.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from kubenode.api import errors, schema
from kubenode.server.apiserver.registry.resources import ResourceInfo, ResourceTable

META_MODELS = {
    "V1ObjectMeta", "V1ListMeta", "V1LabelSelector", "V1LabelSelectorRequirement",
    "V1OwnerReference", "V1ManagedFieldsEntry", "V1Status", "V1StatusDetails",
    "V1StatusCause", "V1DeleteOptions", "V1Preconditions", "V1Condition", "V1APIResource",
    "V1APIResourceList", "V1APIGroup", "V1APIGroupList", "V1APIVersions",
    "V1GroupVersionForDiscovery", "V1ServerAddressByClientCIDR", "V1WatchEvent",
}
INT_OR_STRING = {"targetPort", "port", "maxSurge", "maxUnavailable", "minAvailable"}
_PREFIX = re.compile(r"^(?:[A-Z][a-z]+)*?V\d+(?:alpha\d+|beta\d+)?(?=[A-Z])")


def short_name(model: str) -> str:
    return _PREFIX.sub("", model, count=1)


def group_package(group: str) -> str:
    if group == "":
        return "core"
    if group == "rbac.authorization.k8s.io":
        return "rbac"
    return group.split(".")[0]


def _reachable(model: str, seen: set[str]) -> None:
    if model in seen or schema.model_class(model) is None:
        return
    seen.add(model)
    for t in schema.fields_of(model).values():
        kind, inner = schema.parse_type(t)
        while kind in ("list", "map"):
            kind, inner = schema.parse_type(inner)
        if kind == "model":
            _reachable(inner, seen)


@dataclass(kw_only=True)
class Namer:
    table: ResourceTable
    core: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        for r in self.table.resources:
            if r.group == "":
                _reachable(r.model, self.core)

    def name(self, model: str, group: str, version: str) -> str:
        short = short_name(model)
        if model in META_MODELS:
            return f"io.k8s.apimachinery.pkg.apis.meta.v1.{short}"
        m = re.match(r"^(?:[A-Z][a-z]+)*?(V\d+(?:alpha\d+|beta\d+)?)", model)
        ver = m.group(1).lower() if m else version
        if model in self.core:
            return f"io.k8s.api.core.{ver}.{short}"
        return f"io.k8s.api.{group_package(group)}.{ver}.{short}"


@dataclass(kw_only=True)
class Builder:
    namer: Namer
    group: str
    version: str
    ref_prefix: str
    defs: dict[str, Any] = field(default_factory=dict)
    gvk: dict[str, dict[str, str]] = field(default_factory=dict)

    def ref(self, model: str) -> str:
        name = self.namer.name(model, self.group, self.version)
        if name not in self.defs:
            self.defs[name] = {}
            self.defs[name] = self.model_schema(model, name)
        return name

    def type_schema(self, t: str, key: str) -> dict[str, Any]:
        kind, inner = schema.parse_type(t)
        if kind == "list":
            return {"type": "array", "items": self.type_schema(inner, "")}
        if kind == "map":
            return {"type": "object", "additionalProperties": self.type_schema(inner, "")}
        if kind == "model":
            if schema.model_class(inner) is None:
                return {"type": "object"}
            return {"$ref": self.ref_prefix + self.ref(inner)}
        if inner == "str":
            return {"type": "string"}
        if inner == "int":
            return {"type": "integer", "format": "int64" if key.endswith("Seconds")
                    else "int32"}
        if inner == "float":
            return {"type": "number", "format": "double"}
        if inner == "bool":
            return {"type": "boolean"}
        if inner in ("datetime", "date"):
            return {"type": "string", "format": "date-time"}
        if inner in ("bytearray", "bytes"):
            return {"type": "string", "format": "byte"}
        if key in INT_OR_STRING:
            return {"type": "string", "format": "int-or-string",
                    "x-kubernetes-int-or-string": True}
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}

    def model_schema(self, model: str, name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object", "description": schema.model_description(model)}
        props: dict[str, Any] = {}
        required = []
        for key, (t, req, desc) in schema.field_info(model).items():
            s = self.type_schema(t, key)
            if "$ref" in s:
                s = {"allOf": [s]}
            if desc:
                s["description"] = desc
            meta = schema.patch_meta(model, key)
            if meta is not None:
                s["x-kubernetes-patch-strategy"] = meta.strategy
                if meta.merge_key:
                    s["x-kubernetes-patch-merge-key"] = meta.merge_key
                    if s.get("type") == "array":
                        s["x-kubernetes-list-type"] = "map"
                        s["x-kubernetes-list-map-keys"] = [meta.merge_key]
            props[key] = s
            if req:
                required.append(key)
        out["properties"] = props
        if required:
            out["required"] = required
        if name in self.gvk:
            out["x-kubernetes-group-version-kind"] = [self.gvk[name]]
        return out


def _param(name: str, desc: str, where: str = "query", typ: str = "string",
           v3: bool = True) -> dict[str, Any]:
    p: dict[str, Any] = {"name": name, "in": where, "description": desc}
    if where == "path":
        p["required"] = True
    if v3:
        p["schema"] = {"type": typ}
        if where == "query":
            p["schema"]["uniqueItems"] = True
    else:
        p["type"] = typ
        if where == "query":
            p["uniqueItems"] = True
    return p


WRITE_PARAMS = [
    ("dryRun", "When present, indicates that modifications should not be persisted."),
    ("fieldManager", "fieldManager is a name associated with the actor or entity that is "
                     "making these changes."),
    ("fieldValidation", "fieldValidation instructs the server on how to handle objects in "
                        "the request (POST/PUT/PATCH) containing unknown or duplicate fields. "
                        "Valid values are: Ignore, Warn, Strict."),
]
LIST_PARAMS = ["allowWatchBookmarks", "continue", "fieldSelector", "labelSelector", "limit",
               "resourceVersion", "resourceVersionMatch", "sendInitialEvents",
               "timeoutSeconds", "watch"]
PATCH_MEDIA = ["application/json-patch+json", "application/merge-patch+json",
               "application/strategic-merge-patch+json", "application/apply-patch+yaml"]


def _paths(b: Builder, r: ResourceInfo, *, v3: bool) -> dict[str, Any]:
    base = "/api/v1" if r.group == "" else f"/apis/{r.group}/{r.version}"
    coll = f"{base}/namespaces/{{namespace}}/{r.plural}" if r.namespaced else \
        f"{base}/{r.plural}"
    item = coll + "/{name}"
    obj_name = b.ref(r.model)
    gvk = {"group": r.group, "version": r.version, "kind": r.kind}
    ref = {"$ref": b.ref_prefix + obj_name}
    common: list[dict[str, Any]] = [_param("pretty", "If 'true', then the output is pretty "
                                           "printed.", v3=v3)]
    if r.namespaced:
        common.append(_param("namespace", "object name and auth scope", "path", v3=v3))

    def op(action: str, verb: str, *, body: bool = False, patch: bool = False,
           params: list[dict[str, Any]] | None = None, resp: dict[str, Any] | None = None
           ) -> dict[str, Any]:
        o: dict[str, Any] = {
            "operationId": f"{verb}{r.kind}",
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            "parameters": list(params or []),
        }
        schema_ = resp or ref
        if v3:
            o["responses"] = {"200": {"description": "OK", "content": {
                "application/json": {"schema": schema_}}}}
            if body:
                types = PATCH_MEDIA if patch else ["application/json"]
                o["requestBody"] = {"required": True, "content": {
                    t: {"schema": {"type": "object"} if patch else ref} for t in types}}
        else:
            o["responses"] = {"200": {"description": "OK", "schema": schema_}}
            o["consumes"] = PATCH_MEDIA if patch else ["*/*"]
            o["produces"] = ["application/json", "application/yaml"]
            if body:
                o["parameters"].append({"name": "body", "in": "body", "required": True,
                                        "schema": {"type": "object"} if patch else ref})
        return o

    writes = [_param(n, d, v3=v3) for n, d in WRITE_PARAMS]
    lists = [_param(n, n, typ="integer" if n in ("limit", "timeoutSeconds") else "string",
                    v3=v3) for n in LIST_PARAMS]
    out: dict[str, Any] = {}
    cp: dict[str, Any] = {"parameters": common}
    if "list" in r.verbs:
        cp["get"] = op("list", "list", params=lists)
    if "create" in r.verbs:
        cp["post"] = op("post", "create", body=True, params=writes)
    if "deletecollection" in r.verbs:
        cp["delete"] = op("deletecollection", "deletecollection", params=lists)
    out[coll] = cp
    if r.verbs != ("create",):
        ip: dict[str, Any] = {"parameters": [*common, _param("name", f"name of the {r.kind}",
                                                             "path", v3=v3)]}
        ip["get"] = op("get", "read")
        if "update" in r.verbs:
            ip["put"] = op("put", "replace", body=True, params=writes)
        if "patch" in r.verbs:
            ip["patch"] = op("patch", "patch", body=True, patch=True,
                             params=[*writes, _param("force", "Force is going to force "
                                                     "Apply requests.", typ="boolean",
                                                     v3=v3)])
        if "delete" in r.verbs:
            ip["delete"] = op("delete", "delete", params=[
                _param("gracePeriodSeconds", "grace period", typ="integer", v3=v3),
                _param("propagationPolicy", "propagation policy", v3=v3),
                _param("dryRun", "dry run", v3=v3)])
        out[item] = ip
        if "status" in r.subresources:
            sp = dict(ip)
            sp.pop("delete", None)
            out[item + "/status"] = sp
    return out


def build(table: ResourceTable, group: str, version: str, *, v3: bool,
          namer: Namer) -> dict[str, Any]:
    prefix = "#/components/schemas/" if v3 else "#/definitions/"
    b = Builder(namer=namer, group=group, version=version, ref_prefix=prefix)
    resources = [r for r in table.resources
                 if (r.group, r.version) == (group, version) or group == "*"]
    for r in resources:
        b.gvk[namer.name(r.model, r.group, r.version)] = {
            "group": r.group, "version": r.version, "kind": r.kind}
    paths: dict[str, Any] = {}
    for r in resources:
        b.group, b.version = r.group, r.version
        paths.update(_paths(b, r, v3=v3))
    for r in resources:
        name = namer.name(r.model, r.group, r.version)
        if name in b.defs:
            b.defs[name]["x-kubernetes-group-version-kind"] = [b.gvk[name]]
    info = {"title": "Kubernetes", "version": "v1.32.0"}
    if v3:
        return {"openapi": "3.0.0", "info": info, "paths": paths,
                "components": {"schemas": b.defs}}
    return {"swagger": "2.0", "info": info, "paths": paths, "definitions": b.defs}


@dataclass(kw_only=True)
class OpenAPI:
    table: ResourceTable
    _namer: Namer | None = None
    _cache: dict[str, bytes] = field(default_factory=dict)

    @property
    def namer(self) -> Namer:
        if self._namer is None:
            self._namer = Namer(table=self.table)
        return self._namer

    def _doc(self, key: str) -> bytes:
        if key not in self._cache:
            if key == "v2":
                doc = build(self.table, "*", "*", v3=False, namer=self.namer)
            else:
                g, _, v = key.partition("/")
                doc = build(self.table, g, v, v3=True, namer=self.namer)
            self._cache[key] = json.dumps(doc, separators=(",", ":")).encode()
        return self._cache[key]

    def _gv_path(self, g: str, v: str) -> str:
        return f"api/{v}" if g == "" else f"apis/{g}/{v}"

    def serve(self, request: web.Request, path: str) -> web.Response:
        if path == "/openapi/v2":
            accept = request.headers.get("Accept", "")
            if "protobuf" in accept.split(",")[0]:
                if "v2pb" not in self._cache:
                    from kubenode.server.apiserver.openapi_pb import encode_document
                    self._cache["v2pb"] = encode_document(json.loads(self._doc("v2")))
                return self._bytes(request, self._cache["v2pb"],
                                   content_type="application/octet-stream")
            if accept and "json" not in accept and "*/*" not in accept:
                raise errors.not_acceptable(
                    "only the following media types are accepted: application/json")
            return self._bytes(request, self._doc("v2"))
        if path == "/openapi/v3":
            paths = {}
            for g, v in self.table.group_versions():
                h = hashlib.sha512(f"{g}/{v}".encode() + b"kubenode-1").hexdigest()[:64]
                paths[self._gv_path(g, v)] = {
                    "serverRelativeURL": f"/openapi/v3/{self._gv_path(g, v)}?hash={h}"}
            return web.Response(body=json.dumps({"paths": paths}).encode(),
                                content_type="application/json")
        rest = path.removeprefix("/openapi/v3/")
        for g, v in self.table.group_versions():
            if rest == self._gv_path(g, v):
                return self._bytes(request, self._doc(f"{g}/{v}"))
        raise errors.StatusError(code=404, reason="NotFound",
                                 message="the server could not find the requested resource")

    def _bytes(self, request: web.Request, body: bytes,
               content_type: str = "application/json") -> web.Response:
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=body, content_type=content_type, headers={"ETag": etag})
