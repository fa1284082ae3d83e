"""HTTP handlers of the REST API (upstream apiserver/pkg/endpoints/handlers).

One aiohttp handler serves every `/api` and `/apis` resource path: it parses the
`RequestInfo`, authorizes, decodes the body, dispatches to the resource's `Store` or to a
subresource, and encodes the answer (JSON object, List, Table, or a watch stream of
`{"type", "object"}` lines). Failures are `Status` bodies with upstream codes and reasons.

Split by concern: this module dispatches and does the writes (create, update, patch,
delete); `watchhandler` streams watches, `subresources` serves scale, binding, eviction,
ephemeralcontainers and token; `requestscope` holds what they share and `responses`
the body encoding and decoding (re-exported here).
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from aiohttp import web

from kubenode.api import errors
from kubenode.api.patch import json_merge_patch, json_patch, strategic_merge_patch
from kubenode.server.apiserver import quota, tables
from kubenode.server.apiserver.apply import field_set
from kubenode.server.apiserver.authn import UserInfo
from kubenode.server.apiserver.managedfields import record_update
from kubenode.server.apiserver.registry.resources import STREAMING_SUBRESOURCES, ResourceInfo
from kubenode.server.apiserver.registry.store import Store
from kubenode.server.apiserver.requestinfo import RequestInfo
from kubenode.server.apiserver.responses import JSON as JSON
from kubenode.server.apiserver.responses import MAX_BODY as MAX_BODY
from kubenode.server.apiserver.responses import PATCH_TYPES as PATCH_TYPES
from kubenode.server.apiserver.responses import check_accept as check_accept
from kubenode.server.apiserver.responses import json_response as json_response
from kubenode.server.apiserver.responses import raw_list_response as raw_list_response
from kubenode.server.apiserver.responses import read_body as read_body
from kubenode.server.apiserver.responses import status_response as status_response
from kubenode.server.apiserver.responses import success_status as success_status
from kubenode.server.apiserver.responses import truthy as truthy
from kubenode.server.apiserver.responses import wants_table as wants_table
from kubenode.server.apiserver.subresources import SubresourceHandlers
from kubenode.server.apiserver.watchhandler import WatchHandler


class ResourceHandler(SubresourceHandlers, WatchHandler):
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
            # signing is the CSR signing controller's (kube-controller-manager's), as upstream
            return await (self.patch(request, res, store, namespace, name, "status", dry_run,
                                     user) if verb == "patch" else
                          self._update_status(request, res, store, namespace, name, dry_run))
        if verb == "get":
            obj = await store.get(namespace, name)
            return self.respond_object(request, res, obj)
        if verb == "list":
            opts = self.list_options(request)
            if not wants_table(request) and not opts.label_selector.requirements and \
                    not opts.field_selector.requirements:
                return raw_list_response(await store.list(namespace, opts, raw=True))
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
            record_update(None, body, manager=self.manager(request),
                          api_version=res.api_version, now=self.server.clock(),
                          subresource="", field_set=field_set(body, res.model))
            new_obj = await store.create(namespace, body, dry_run=dry_run)
            return self.respond_object(request, res, new_obj, status=201)
        if verb == "update":
            body = await self.decode_object(request, res)
            if not isinstance(body, dict):
                raise errors.bad_request("the body of the request was in an unknown format")
            sub = "status" if info.subresource == "status" else ""
            try:
                old: dict[str, Any] | None = await store.get(namespace, name)
            except errors.StatusError as err:
                if err.code != 404:
                    raise
                old = None
            record_update(old, body, manager=self.manager(request),
                          api_version=res.api_version, now=self.server.clock(),
                          subresource=info.subresource, field_set=field_set(body, res.model))
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
            if namespace and not dry_run and res.plural != "resourcequotas":
                await quota.refresh(self.server, namespace)
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
        manager = self.manager(request)

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
            record_update(current, new, manager=manager, api_version=res.api_version,
                          now=self.server.clock(), subresource=subresource,
                          field_set=field_set(new, res.model))
            return new

        obj = await store.guaranteed_update(namespace, name, mutate, subresource=sub,
                                            dry_run=dry_run)
        return self.respond_object(request, res, obj)
