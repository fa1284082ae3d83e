"""The three PATCH formats of the Kubernetes API.

- `json_merge_patch` (application/merge-patch+json, RFC 7386),
- `json_patch` (application/json-patch+json, RFC 6902, via the `jsonpatch` library),
- `strategic_merge_patch` (application/strategic-merge-patch+json): merge lists of objects
  by their merge key, honour `$patch` (replace/delete/merge), `$retainKeys`,
  `$deleteFromPrimitiveList/<f>` and `$setElementOrder/<f>`, walking the model types of
  `kubenode.api.schema` to find each list's patch strategy.

All return a new object and raise `ValueError` on a malformed patch.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from kubenode.api import schema


def json_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = json_merge_patch(result.get(k), v)
    return result


def json_patch(target: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise ValueError("json patch must be a list of operations")
    try:
        return jsonpatch.JsonPatch(ops).apply(copy.deepcopy(target))
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError,
            TypeError, IndexError) as err:
        raise ValueError(str(err)) from err


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items()
                if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value
                if not (isinstance(v, dict) and v.get("$patch") == "delete")]
    return value


def _elem_model(model: str | None, key: str) -> str | None:
    t = schema.field_type(model, key)
    if t is None:
        return None
    kind, inner = schema.parse_type(t)
    if kind == "list":
        kind, inner = schema.parse_type(inner)
    return inner if kind == "model" else None


def strategic_merge_patch(original: Any, patch: Any, model: str | None) -> Any:
    if not isinstance(patch, dict):
        raise ValueError("strategic merge patch must be a JSON object")
    return _merge_map(original if isinstance(original, dict) else {}, patch, model)


def _merge_map(original: dict[str, Any], patch: dict[str, Any],
               model: str | None) -> dict[str, Any]:
    directive = patch.get("$patch")
    if directive == "replace":
        return dict(_strip_directives(patch))
    if directive == "delete":
        return {}
    result = copy.deepcopy(original)
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list) and isinstance(value, list):
                result[field] = [v for v in result[field] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        cur = result.get(key)
        sub_model = _elem_model(model, key)
        if isinstance(value, dict):
            if isinstance(cur, dict) and not _is_map_of_primitives_replace(value):
                result[key] = _merge_map(cur, value, sub_model)
            else:
                merged = _merge_map({}, value, sub_model) if "$patch" in value else None
                result[key] = merged if merged is not None else _strip_directives(value)
        elif isinstance(value, list):
            meta = schema.patch_meta(model, key)
            result[key] = _merge_list(cur if isinstance(cur, list) else [], value, meta,
                                      sub_model)
        else:
            result[key] = value
    if isinstance(retain, list):
        for key in list(result):
            if key not in retain:
                result.pop(key)
    # order lists as $setElementOrder asks
    for key, order in patch.items():
        if key.startswith("$setElementOrder/") and isinstance(order, list):
            field = key.split("/", 1)[1]
            meta = schema.patch_meta(model, field)
            if isinstance(result.get(field), list) and meta is not None:
                result[field] = _order(result[field], order, meta.merge_key)
    return result


def _is_map_of_primitives_replace(value: dict[str, Any]) -> bool:
    return value.get("$patch") == "replace"


def _order(items: list[Any], order: list[Any], merge_key: str) -> list[Any]:
    def ident(v: Any) -> Any:
        if merge_key and isinstance(v, dict):
            return v.get(merge_key)
        return v

    wanted = [ident(o) for o in order]
    pos = {w: i for i, w in enumerate(wanted) if isinstance(w, str | int | float)}
    ranked = sorted(enumerate(items), key=lambda p: (pos.get(ident(p[1]), len(pos) + p[0])))
    return [v for _, v in ranked]


def _merge_list(original: list[Any], patch: list[Any], meta: schema.PatchMeta | None,
                model: str | None) -> list[Any]:
    if meta is None or "merge" not in meta.strategy:
        if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
            return [_strip_directives(p) for p in patch
                    if not (isinstance(p, dict) and "$patch" in p)]
        return [_strip_directives(p) for p in patch]
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [_strip_directives(p) for p in patch
                if not (isinstance(p, dict) and "$patch" in p)]
    if not meta.merge_key:
        out = list(original)
        for p in patch:
            if p not in out:
                out.append(p)
        return out
    key = meta.merge_key
    out = copy.deepcopy(original)
    for p in patch:
        if not isinstance(p, dict):
            raise ValueError(f"expected a map in list merged by {key!r}")
        if key not in p:
            raise ValueError(f"map: {p} does not contain declared merge key: {key}")
        idx = next((i for i, o in enumerate(out)
                    if isinstance(o, dict) and o.get(key) == p[key]), None)
        if p.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(_merge_map({}, p, model))
        else:
            out[idx] = _merge_map(out[idx], p, model)
    return out
