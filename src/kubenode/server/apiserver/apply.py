"""Server-side apply (application/apply-patch+yaml), good enough for
`kubectl apply --server-side`: the applied configuration is merged into the live object
(lists merged by their merge keys), and fields this manager applied before but left out
now are removed. Each manager's applied field set is kept in `metadata.managedFields`
(fieldsV1 format) with operation Apply; other writers' fields are kept. Changing a field
another manager owns is a 409 Conflict unless force=true (see managedfields).
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from kubenode.api import errors, schema
from kubenode.api.meta import format_time
from kubenode.api.patch import strategic_merge_patch
from kubenode.server.apiserver.managedfields import check_apply
from kubenode.server.apiserver.registry.decode import prune_unknown
from kubenode.server.apiserver.registry.resources import ResourceInfo
from kubenode.server.apiserver.registry.store import Store
from kubenode.server.apiserver.responses import json_response, truthy

if TYPE_CHECKING:
    from kubenode.server.apiserver.server import APIServer

Fields = dict[str, Any]


def _elem(model: str | None, key: str) -> tuple[str | None, bool]:
    t = schema.field_type(model, key)
    if t is None:
        return None, False
    kind, inner = schema.parse_type(t)
    if kind == "list":
        k2, i2 = schema.parse_type(inner)
        return (i2 if k2 == "model" else None), True
    if kind == "map":
        k2, i2 = schema.parse_type(inner)
        return (i2 if k2 == "model" else None), False
    return (inner if kind == "model" else None), False


def field_set(obj: Any, model: str | None) -> Fields:
    """fieldsV1 of a configuration."""
    out: Fields = {}
    if not isinstance(obj, dict):
        return out
    for key, value in obj.items():
        if key in ("apiVersion", "kind") and model is not None and schema.field_type(
                model, "kind") is not None and schema.field_type(model, "metadata"):
            continue
        sub_model, _ = _elem(model, key)
        meta = schema.patch_meta(model, key)
        node: Fields = {}
        if isinstance(value, dict):
            node = field_set(value, sub_model if sub_model else None)
            if sub_model is None:  # map of scalars
                node = {f"f:{k}": {} for k in value} if not any(
                    isinstance(x, dict) for x in value.values()) else field_set(value, None)
        elif isinstance(value, list) and meta is not None and meta.merge_key:
            for item in value:
                if isinstance(item, dict) and meta.merge_key in item:
                    k = "k:" + json.dumps({meta.merge_key: item[meta.merge_key]},
                                          separators=(",", ":"))
                    sub = field_set(item, sub_model)
                    sub["."] = {}
                    node[k] = sub
        elif isinstance(value, list) and meta is not None and "merge" in meta.strategy:
            for item in value:
                node["v:" + json.dumps(item, separators=(",", ":"))] = {}
        out[f"f:{key}"] = node
    return out


def _union(into: Fields, fields: Fields) -> None:
    for k, sub in fields.items():
        _union(into.setdefault(k, {}), sub or {})


def _minus(old: Fields, new: Fields) -> Fields:
    """Leaves of old that new does not have."""
    out: Fields = {}
    for k, v in old.items():
        if k == ".":
            continue
        if k not in new:
            out[k] = v if v else {}
        elif v and isinstance(new.get(k), dict):
            sub = _minus(v, new[k])
            if sub:
                out[k] = sub
    return out


def _unowned(stale: Fields, others: Fields) -> Fields:
    """The part of `stale` no other manager owns: a field another manager owns stays, and
    so does a list item another manager owns anything in (its "." is dropped)."""
    out: Fields = {}
    for k, sub in stale.items():
        if k not in others:
            out[k] = sub
        elif sub and k != ".":
            rest = {x: y for x, y in _unowned(sub, others[k] or {}).items() if x != "."}
            if rest:
                out[k] = rest
    return out


def _remove(obj: Any, fields: Fields) -> None:
    if isinstance(obj, dict):
        for k, sub in fields.items():
            if k.startswith("f:"):
                name = k[2:]
                if name not in obj:
                    continue
                if not sub or "." in sub:
                    obj.pop(name, None)
                else:
                    _remove(obj[name], sub)
    elif isinstance(obj, list):
        for k, sub in fields.items():
            if k.startswith("k:"):
                ident = json.loads(k[2:])
                for i, item in enumerate(obj):
                    if isinstance(item, dict) and all(item.get(a) == b for a, b in ident.items()):
                        if not sub or "." in sub:  # the item itself is no longer applied
                            obj.pop(i)
                        else:
                            _remove(item, sub)
                        break
            elif k.startswith("v:"):
                val = json.loads(k[2:])
                if val in obj:
                    obj.remove(val)


def _update_managed(obj: dict[str, Any], manager: str, fields: Fields, api_version: str,
                    now: float, subresource: str) -> None:
    md = obj.setdefault("metadata", {})
    entries = [e for e in md.get("managedFields") or []
               if not (e.get("manager") == manager and e.get("operation") == "Apply")]
    entry: dict[str, Any] = {"manager": manager, "operation": "Apply",
                             "apiVersion": api_version, "time": format_time(now),
                             "fieldsType": "FieldsV1", "fieldsV1": fields}
    if subresource:
        entry["subresource"] = subresource
    entries.append(entry)
    md["managedFields"] = entries


async def apply(server: APIServer, request: web.Request, res: ResourceInfo, store: Store,
                namespace: str, name: str, patch: Any, *, dry_run: bool,
                subresource: str) -> web.Response:
    manager = request.query.get("fieldManager", "")
    force = truthy(request.query.get("force"))
    if not manager:
        raise errors.bad_request("PATCH " + request.path + ": fieldManager is required for "
                                 "apply requests")
    if not isinstance(patch, dict):
        raise errors.bad_request("apply patch must be an object")
    if patch.get("kind") and patch["kind"] != res.kind:
        raise errors.bad_request(f"the kind in the data ({patch['kind']}) does not match the "
                                 f"expected kind ({res.kind})")
    patch = copy.deepcopy(patch)
    unknown = prune_unknown(patch, res.model)
    if unknown and request.query.get("fieldValidation", "Strict") == "Strict":
        raise errors.bad_request("strict decoding error: " + ", ".join(
            f'unknown field "{u}"' for u in unknown))
    pmd = patch.get("metadata") or {}
    if pmd.get("name") and pmd["name"] != name:
        raise errors.bad_request(f"the name of the object ({pmd['name']}) does not match the "
                                 f"name on the URL ({name})")
    fields = field_set(patch, res.model)
    fields.pop("f:apiVersion", None)
    fields.pop("f:kind", None)
    md_fields = fields.get("f:metadata") or {}
    md_fields.pop("f:name", None)
    md_fields.pop("f:namespace", None)
    if "f:metadata" in fields and not md_fields:
        fields.pop("f:metadata")
    now = server.clock()
    try:
        await store.get(namespace, name)
        exists = True
    except errors.StatusError as err:
        if err.code != 404:
            raise
        exists = False
    if not exists:
        if subresource:
            raise errors.not_found(resource=res.plural, group=res.group, name=name)
        obj = copy.deepcopy(patch)
        obj.setdefault("metadata", {})["name"] = name
        _update_managed(obj, manager, fields, res.api_version, now, "")
        created = await store.create(namespace, obj, dry_run=dry_run)
        return json_response(created, status=201)

    def mutate(current: dict[str, Any]) -> dict[str, Any]:
        previous: Fields = {}
        others: Fields = {}
        for e in (current.get("metadata") or {}).get("managedFields") or []:
            if e.get("manager") == manager and e.get("operation") == "Apply":
                previous = e.get("fieldsV1") or {}
            else:
                _union(others, e.get("fieldsV1") or {})
        # what this manager applied before and no longer does, unless someone else owns it
        stale = _unowned(_minus(previous, fields), others)
        new = copy.deepcopy(current)
        check_apply(new, patch, fields, manager=manager, force=force)
        if stale:
            _remove(new, stale)
        body = {k: val for k, val in patch.items() if k not in ("apiVersion", "kind")}
        body_md = dict(body.get("metadata") or {})
        body_md.pop("resourceVersion", None)
        if body_md:
            body["metadata"] = body_md
        else:
            body.pop("metadata", None)
        merged = strategic_merge_patch(new, body, res.model)
        _update_managed(merged, manager, fields, res.api_version, now, subresource)
        rv = pmd.get("resourceVersion")
        if rv:
            merged["metadata"]["resourceVersion"] = rv
        return merged

    obj = await store.guaranteed_update(namespace, name, mutate,
                                        subresource="status" if subresource == "status" else "",
                                        dry_run=dry_run)
    return json_response(obj)
