"""Subresource handlers: scale (Scale of deployments, replicasets, statefulsets...),
pods/ephemeralcontainers, pods/binding, pods/eviction, serviceaccounts/token.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml
from aiohttp import web

from kubenode.api import errors
from kubenode.api.patch import json_merge_patch, json_patch, strategic_merge_patch
from kubenode.server.apiserver.apply import field_set
from kubenode.server.apiserver.eviction import check_disruption_budget
from kubenode.server.apiserver.managedfields import record_update
from kubenode.server.apiserver.registry.resources import ResourceInfo
from kubenode.server.apiserver.registry.store import Store
from kubenode.server.apiserver.requestscope import RequestScope
from kubenode.server.apiserver.responses import (
    PATCH_TYPES,
    json_response,
    read_body,
    success_status,
)


class SubresourceHandlers(RequestScope):
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
            before = copy.deepcopy(current)
            current.setdefault("spec", {})["replicas"] = replicas
            if rv:
                current["metadata"]["resourceVersion"] = rv
            # The scale writer owns spec.replicas, recorded with subresource "scale".
            record_update(before, current, manager=self.manager(request),
                          api_version=store.info.api_version, now=self.server.clock(),
                          subresource="scale", field_set={"f:spec": {"f:replicas": {}}})
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
            before = copy.deepcopy(cur)
            cur.setdefault("spec", {})["ephemeralContainers"] = new_eph
            record_update(before, cur, manager=self.manager(request),
                          api_version=res.api_version, now=self.server.clock(),
                          subresource="ephemeralcontainers",
                          field_set=field_set({"spec": {"ephemeralContainers": new_eph}},
                                              res.model))
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
                          "lastTransitionTime": now_str(self.server.clock())})
            status["conditions"] = conds
            return pod

        await self.server.stores[("", "pods")].guaranteed_update(
            namespace, name, lambda p: mutate(p), subresource="raw")
        return json_response(success_status(), status=201)

    async def eviction(self, request: web.Request, store: Store, namespace: str, name: str,
                       dry_run: bool) -> web.Response:
        body = await read_body(request) or {}
        if (body.get("metadata") or {}).get("name") not in (None, "", name):
            raise errors.bad_request("name in URL does not match name in Eviction object")
        options = body.get("deleteOptions") or {}
        pod = await store.get(namespace, name)
        await check_disruption_budget(self.server, pod, dry_run=dry_run)
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


def now_str(t: float) -> str:
    from kubenode.api.meta import format_time
    return format_time(t)
