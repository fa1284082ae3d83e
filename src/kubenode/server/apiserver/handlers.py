"""HTTP handlers of the REST API (upstream apiserver/pkg/endpoints/handlers).

One aiohttp handler serves every `/api` and `/apis` resource path: it parses the
`RequestInfo`, authorizes, decodes the body, dispatches to the resource's `Store` or to a
subresource, and encodes the answer (JSON object, List, Table, or a watch stream of
`{"type", "object"}` lines). Failures are `Status` bodies with upstream codes and reasons.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import random
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web

from kubenode.api import errors
from kubenode.api.fields import parse_field_selector
from kubenode.api.labels import parse_selector
from kubenode.api.patch import json_merge_patch, json_patch, strategic_merge_patch
from kubenode.server.apiserver import protobuf, tables
from kubenode.server.apiserver.authn import UserInfo
from kubenode.server.apiserver.registry.decode import prune_unknown, type_error
from kubenode.server.apiserver.registry.resources import STREAMING_SUBRESOURCES, ResourceInfo
from kubenode.server.apiserver.registry.store import ListOptions, Store, parse_rv
from kubenode.server.apiserver.requestinfo import RequestInfo

if TYPE_CHECKING:
    from kubenode.server.apiserver.server import APIServer

log = logging.getLogger(__name__)

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


def _truthy(v: str | None) -> bool:
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


class ResourceHandler:
    def __init__(self, server: APIServer) -> None:
        self.server = server

    # ------------------------------------------------------------------ dispatch
    async def handle(self, request: web.Request, info: RequestInfo,
                     user: UserInfo) -> web.StreamResponse:
        res = self.server.table.lookup(info.group, info.version, info.resource)
        if res is None:
            raise errors.StatusError(code=404, reason="NotFound",
                                     message="the server could not find the requested resource")
        if info.subresource and info.subresource not in res.subresources:
            raise errors.StatusError(code=404, reason="NotFound",
                                     message="the server could not find the requested resource")
        namespace = info.namespace if res.namespaced else ""
        name = info.name
        if res.plural == "namespaces" and not name and info.namespace and \
                info.verb not in ("list", "watch", "create", "deletecollection"):
            name = info.namespace
        if res.namespaced and not namespace and info.verb not in ("list", "watch") and \
                not (info.verb == "create" and name):
            raise errors.StatusError(code=404, reason="NotFound",
                                     message="the server could not find the requested resource")
        store = self.server.stores[(res.group, res.plural)]
        verb = info.verb
        if verb not in res.verbs and not info.subresource:
            raise errors.method_not_allowed(
                f"{verb} is not supported on resources of kind "
                f'"{res.qualified}"')
        if info.subresource in STREAMING_SUBRESOURCES or info.subresource == "proxy":
            return await self.server.streaming(request, res, namespace, name, info)
        if res.kind in self.server.virtual_handlers:
            if verb != "create":
                raise errors.method_not_allowed(f"{verb} is not supported")
            body = await read_body(request)
            out = await self.server.virtual_handlers[res.kind](body or {}, user)
            return json_response(out, status=201)
        dry_run = request.query.get("dryRun") == "All"
        if info.subresource == "scale":
            return await self.scale(request, store, namespace, name, verb, dry_run)
        if info.subresource == "binding":
            return await self.binding(request, store, namespace, name)
        if info.subresource == "eviction":
            return await self.eviction(request, store, namespace, name, dry_run)
        if info.subresource == "token":
            return await self.token_request(request, store, namespace, name)
        if info.subresource == "finalize":
            verb = "update"
        if info.subresource == "ephemeralcontainers":
            return await self.ephemeral_containers(request, res, store, namespace, name, verb,
                                                   dry_run)
        if info.subresource == "approval" and verb in ("update", "patch"):
            resp = await (self.patch(request, res, store, namespace, name, "status", dry_run,
                                     user) if verb == "patch" else
                          self._update_status(request, res, store, namespace, name, dry_run))
            if not dry_run:
                await self.server.sign_csr(name)
            return resp
        if verb == "get":
            obj = await store.get(namespace, name)
            return self.respond_object(request, res, obj)
        if verb == "list":
            opts = self.list_options(request)
            lst = await store.list(namespace, opts)
            if wants_table(request):
                return json_response(tables.to_table(res, lst["items"], lst["metadata"],
                                                     include=request.query.get(
                                                         "includeObject", "Metadata"),
                                                     now=self.server.clock()))
            return json_response(lst)
        if verb == "watch":
            return await self.watch(request, res, store, namespace, name)
        if verb == "create":
            body = await self.decode_object(request, res)
            if body is None:
                raise errors.bad_request("the body of the request was in an unknown format - "
                                         "accepted media types include: application/json, "
                                         "application/yaml")
            if res.kind == "CertificateSigningRequest" and isinstance(body.get("spec"), dict):
                body["spec"].update(username=user.name, groups=list(user.groups))
                if user.uid:
                    body["spec"]["uid"] = user.uid
            new_obj = await store.create(namespace, body, dry_run=dry_run)
            return self.respond_object(request, res, new_obj, status=201)
        if verb == "update":
            body = await self.decode_object(request, res)
            if not isinstance(body, dict):
                raise errors.bad_request("the body of the request was in an unknown format")
            sub = "status" if info.subresource == "status" else ""
            updated, created = await store.update(namespace, name, body, subresource=sub,
                                                  dry_run=dry_run)
            return self.respond_object(request, res, updated, status=201 if created else 200)
        if verb == "patch":
            return await self.patch(request, res, store, namespace, name, info.subresource,
                                    dry_run, user)
        if verb == "delete":
            options = await read_body(request) or {}
            if "gracePeriodSeconds" in request.query:
                options["gracePeriodSeconds"] = int(request.query["gracePeriodSeconds"])
            if "propagationPolicy" in request.query:
                options["propagationPolicy"] = request.query["propagationPolicy"]
            obj, _ = await store.delete(namespace, name, options=options,
                                              dry_run=dry_run)
            return self.respond_object(request, res, obj)
        if verb == "deletecollection":
            opts = self.list_options(request)
            options = await read_body(request) or {}
            lst = await store.list(namespace, opts)
            for item in lst["items"]:
                md = item["metadata"]
                try:
                    await store.delete(md.get("namespace", ""), md["name"], options=options,
                                       dry_run=dry_run)
                except errors.StatusError as err:
                    if err.code != 404:
                        raise
            return json_response(lst)
        raise errors.method_not_allowed(f"{verb} is not supported")

    async def _update_status(self, request: web.Request, res: ResourceInfo, store: Store,
                             namespace: str, name: str, dry_run: bool) -> web.Response:
        body = await self.decode_object(request, res)
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request was in an unknown format")
        updated, _ = await store.update(namespace, name, body, subresource="status",
                                        dry_run=dry_run)
        return self.respond_object(request, res, updated)

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

    # ------------------------------------------------------------------ patch
    async def patch(self, request: web.Request, res: ResourceInfo, store: Store,
                    namespace: str, name: str, subresource: str, dry_run: bool,
                    user: UserInfo) -> web.Response:
        ptype = PATCH_TYPES.get(request.content_type)
        if ptype is None:
            raise errors.unsupported_media_type(
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {', '.join(PATCH_TYPES)}")
        raw = await request.read()
        try:
            patch = yaml.safe_load(raw) if ptype == "apply" else json.loads(raw or b"null")
        except (ValueError, yaml.YAMLError) as err:
            raise errors.bad_request(f"error decoding patch: {err}") from err
        if ptype == "apply":
            return await self.server.apply(request, res, store, namespace, name, patch,
                                           dry_run=dry_run, subresource=subresource)
        sub = "status" if subresource == "status" else ""

        def mutate(current: dict[str, Any]) -> dict[str, Any]:
            try:
                if ptype == "json":
                    new = json_patch(current, patch)
                elif ptype == "merge":
                    new = json_merge_patch(current, patch)
                else:
                    new = strategic_merge_patch(current, patch, res.model)
            except ValueError as err:
                raise errors.StatusError(code=422, reason="Invalid",
                                         message=str(err)) from err
            if not isinstance(new, dict):
                raise errors.bad_request("patch result is not an object")
            self.prune(request, new, res)
            return new

        obj = await store.guaranteed_update(namespace, name, mutate, subresource=sub,
                                            dry_run=dry_run)
        return self.respond_object(request, res, obj)

    # ------------------------------------------------------------------ subresources
    async def scale(self, request: web.Request, store: Store, namespace: str, name: str,
                    verb: str, dry_run: bool) -> web.Response:
        def to_scale(obj: dict[str, Any]) -> dict[str, Any]:
            md = obj["metadata"]
            sel = (obj.get("spec") or {}).get("selector") or {}
            if isinstance(sel, dict) and ("matchLabels" in sel or "matchExpressions" in sel):
                parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
                selector = ",".join(parts)
            elif isinstance(sel, dict):
                selector = ",".join(f"{k}={v}" for k, v in sorted(sel.items()))
            else:
                selector = ""
            return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                    "metadata": {"name": md["name"], "namespace": md.get("namespace"),
                                 "uid": md.get("uid"), "resourceVersion": md["resourceVersion"],
                                 "creationTimestamp": md.get("creationTimestamp")},
                    "spec": {"replicas": int((obj.get("spec") or {}).get("replicas", 1))},
                    "status": {"replicas": int((obj.get("status") or {}).get("replicas", 0)),
                               "selector": selector}}

        if verb == "get":
            return json_response(to_scale(await store.get(namespace, name)))
        body: Any
        if verb == "update":
            body = await read_body(request)
        elif verb == "patch":
            body = None
        else:
            raise errors.method_not_allowed(f"{verb} is not supported on scale")
        ptype = PATCH_TYPES.get(request.content_type) if verb == "patch" else None
        raw = await request.read() if verb == "patch" else b""

        def mutate(current: dict[str, Any]) -> dict[str, Any]:
            scale = to_scale(current)
            if verb == "update":
                new_scale = body or {}
            else:
                p = json.loads(raw or b"{}") if ptype != "apply" else yaml.safe_load(raw)
                new_scale = json_patch(scale, p) if ptype == "json" else \
                    json_merge_patch(scale, p)
            rv = (new_scale.get("metadata") or {}).get("resourceVersion")
            replicas = (new_scale.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise errors.invalid(kind="Scale", group="autoscaling", name=name, causes=[
                    errors.StatusCause(type="FieldValueInvalid", field="spec.replicas",
                                       message=f"Invalid value: {replicas}: must be greater "
                                               "than or equal to 0")])
            current.setdefault("spec", {})["replicas"] = replicas
            if rv:
                current["metadata"]["resourceVersion"] = rv
            return current

        obj = await store.guaranteed_update(namespace, name, mutate, dry_run=dry_run)
        return json_response(to_scale(obj))

    async def ephemeral_containers(self, request: web.Request, res: ResourceInfo,
                                   store: Store, namespace: str, name: str, verb: str,
                                   dry_run: bool) -> web.Response:
        """pods/ephemeralcontainers (`kubectl debug`): only spec.ephemeralContainers
        changes; existing ones may be neither changed nor removed."""
        if verb == "get":
            return self.respond_object(request, res, await store.get(namespace, name))
        if verb == "update":
            body = await self.decode_object(request, res)

            def produce(cur: dict[str, Any]) -> dict[str, Any]:
                return dict(body or {})
        elif verb == "patch":
            ptype = PATCH_TYPES.get(request.content_type)
            raw = await request.read()
            patch = json.loads(raw or b"null")

            def produce(cur: dict[str, Any]) -> dict[str, Any]:
                if ptype == "json":
                    return dict(json_patch(cur, patch))
                if ptype == "merge":
                    return dict(json_merge_patch(cur, patch))
                return strategic_merge_patch(cur, patch, res.model)
        else:
            raise errors.method_not_allowed(f"{verb} is not supported")

        def mutate(cur: dict[str, Any]) -> dict[str, Any]:
            new = produce(copy.deepcopy(cur))
            self.prune(request, new, res)
            old_eph = (cur.get("spec") or {}).get("ephemeralContainers") or []
            new_eph = (new.get("spec") or {}).get("ephemeralContainers") or []
            causes: list[errors.StatusCause] = []
            by_name = {c.get("name"): c for c in new_eph if isinstance(c, dict)}
            for c in old_eph:
                if by_name.get(c.get("name")) != c:
                    causes.append(errors.StatusCause(
                        type="FieldValueForbidden", field="spec.ephemeralContainers",
                        message="Forbidden: existing ephemeral containers "
                                f'"{c.get("name")}" may not be changed'))
            taken = {c.get("name") for key in ("containers", "initContainers")
                     for c in (cur.get("spec") or {}).get(key) or []}
            for i, c in enumerate(new_eph):
                if c in old_eph:
                    continue
                path = f"spec.ephemeralContainers[{i}]"
                if not c.get("name"):
                    causes.append(errors.StatusCause(type="FieldValueRequired",
                                                     message="Required value",
                                                     field=f"{path}.name"))
                elif c["name"] in taken:
                    causes.append(errors.StatusCause(
                        type="FieldValueDuplicate", message=f'Duplicate value: "{c["name"]}"',
                        field=f"{path}.name"))
                if not c.get("image"):
                    causes.append(errors.StatusCause(type="FieldValueRequired",
                                                     message="Required value",
                                                     field=f"{path}.image"))
                c.setdefault("terminationMessagePath", "/dev/termination-log")
                c.setdefault("terminationMessagePolicy", "File")
                c.setdefault("resources", {})
                if c.get("image"):
                    c.setdefault("imagePullPolicy", "Always" if ":" not in c["image"].rsplit(
                        "/", 1)[-1] or c["image"].endswith(":latest") else "IfNotPresent")
            if causes:
                raise errors.invalid(kind="Pod", name=name, causes=causes)
            cur.setdefault("spec", {})["ephemeralContainers"] = new_eph
            return cur

        obj = await store.guaranteed_update(namespace, name, mutate, subresource="raw",
                                            dry_run=dry_run)
        return self.respond_object(request, res, obj)

    async def binding(self, request: web.Request, store: Store, namespace: str,
                      name: str) -> web.Response:
        body = await read_body(request) or {}
        target = body.get("target") or {}
        node = target.get("name")
        if not node:
            raise errors.invalid(kind="Binding", name=name, causes=[errors.StatusCause(
                type="FieldValueRequired", message="Required value", field="target.name")])
        bmd = body.get("metadata") or {}

        def mutate(pod: dict[str, Any]) -> dict[str, Any]:
            md = pod["metadata"]
            if bmd.get("uid") and bmd["uid"] != md.get("uid"):
                raise errors.conflict(resource="pods", name=name,
                                      detail="Precondition failed: UID mismatch")
            if md.get("deletionTimestamp"):
                raise errors.conflict(resource="pods", name=name,
                                      detail="pod is being deleted, cannot be assigned to a "
                                             "host")
            spec = pod.setdefault("spec", {})
            if spec.get("nodeName"):
                raise errors.conflict(resource="pods", name=name,
                                      detail=f"pod {name} is already assigned to node "
                                             f'"{spec["nodeName"]}"')
            spec["nodeName"] = node
            if bmd.get("annotations"):
                md.setdefault("annotations", {}).update(bmd["annotations"])
            status = pod.setdefault("status", {})
            conds = [c for c in status.get("conditions") or []
                     if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                          "lastTransitionTime": _now_str(self.server.clock())})
            status["conditions"] = conds
            return pod

        await self.server.stores[("", "pods")].guaranteed_update(
            namespace, name, lambda p: mutate(p), subresource="raw")
        return json_response(success_status(), status=201)

    async def eviction(self, request: web.Request, store: Store, namespace: str, name: str,
                       dry_run: bool) -> web.Response:
        body = await read_body(request) or {}
        options = body.get("deleteOptions") or {}
        await store.delete(namespace, name, options=options, dry_run=dry_run)
        return json_response(success_status(), status=201)

    async def token_request(self, request: web.Request, store: Store, namespace: str,
                            name: str) -> web.Response:
        """serviceaccounts/<name>/token: a TokenRequest answered with a signed JWT."""
        body = await read_body(request) or {}
        sa = await store.get(namespace, name)
        spec = body.get("spec") or {}
        expiration = int(spec.get("expirationSeconds") or 3600)
        expiration = max(600, min(expiration, 48 * 3600))
        pod: dict[str, str] | None = None
        ref = spec.get("boundObjectRef") or {}
        if ref.get("kind") == "Pod":
            pod = {"name": ref.get("name", ""), "uid": ref.get("uid", "")}
        token, exp = self.server.sa_tokens.issue(
            namespace=namespace, name=name, uid=sa["metadata"].get("uid", ""),
            audiences=spec.get("audiences") or None, expiration_seconds=expiration, pod=pod)
        from kubenode.api.meta import format_time
        out = {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
               "metadata": {"name": name, "namespace": namespace,
                            "creationTimestamp": format_time(self.server.clock())},
               "spec": dict(spec, expirationSeconds=expiration,
                            audiences=spec.get("audiences") or [
                                "https://kubernetes.default.svc.cluster.local"]),
               "status": {"token": token, "expirationTimestamp": format_time(exp)}}
        return json_response(out, status=201)

    # ------------------------------------------------------------------ watch
    async def watch(self, request: web.Request, res: ResourceInfo, store: Store,
                    namespace: str, name: str) -> web.StreamResponse:
        opts = self.list_options(request)
        if name:
            fs = parse_field_selector(f"metadata.name={name}")
            opts = ListOptions(label_selector=opts.label_selector, field_selector=fs,
                               resource_version=opts.resource_version)
        q = request.query
        timeout = float(q.get("timeoutSeconds") or 0) or random.uniform(1800, 3600)
        bookmarks = _truthy(q.get("allowWatchBookmarks"))
        send_initial = _truthy(q.get("sendInitialEvents"))
        table = wants_table(request)
        include = q.get("includeObject", "Metadata")
        if opts.resource_version not in ("", "0") and not send_initial:
            await store.wait_fresh(parse_rv(opts.resource_version),
                                   wait=store.fresh_timeout)
        gen = store.watch(namespace, opts, bookmarks=bookmarks,
                          bookmark_interval=self.server.config.bookmark_interval,
                          send_initial=send_initial)
        # errors before the first event (bad selector) surface as a Status
        resp = web.StreamResponse(status=200, headers={"Content-Type": JSON,
                                                       "Transfer-Encoding": "chunked"})
        await resp.prepare(request)
        first = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        it = gen.__aiter__()
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(it.__anext__(), timeout=remaining)
                except (TimeoutError, StopAsyncIteration):
                    break
                obj = ev.object
                if table and ev.type in ("ADDED", "MODIFIED", "DELETED"):
                    obj = tables.to_table(res, [obj], {"resourceVersion": obj["metadata"].get(
                        "resourceVersion", "")}, include=include, now=self.server.clock(),
                        headers=first)
                    first = False
                line = json.dumps({"type": ev.type, "object": obj}, separators=(",", ":"))
                await resp.write(line.encode() + b"\n")
                if ev.type == "ERROR":
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            await gen.aclose()  # type: ignore[attr-defined]
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp


def _now_str(t: float) -> str:
    from kubenode.api.meta import format_time
    return format_time(t)


def deep(obj: Any) -> Any:
    return copy.deepcopy(obj)
