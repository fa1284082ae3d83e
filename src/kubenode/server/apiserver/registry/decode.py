"""Decoding a request body against its kind's schema: unknown fields and numbers-as-strings.

`prune_unknown(obj, model)` drops fields the model does not declare (as decoding into
upstream's Go structs does) and returns their paths, for fieldValidation Strict (error) and
Warn (a `Warning` header). Quantities given as numbers (`cpu: 1`) become strings.
"""

from __future__ import annotations

from typing import Any

from kubenode.api import schema

_QUANTITY_MAPS = {"limits", "requests", "capacity", "allocatable", "hard", "used", "overhead"}
_QUANTITY_FIELDS = {"sizeLimit", "storage"}


def _num_to_str(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    return v


def prune_unknown(obj: Any, model: str, path: str = "") -> list[str]:
    unknown: list[str] = []
    if not isinstance(obj, dict):
        return unknown
    fields = schema.fields_of(model)
    if not fields:
        return unknown
    for key in list(obj):
        sub = f"{path}.{key}" if path else key
        t = fields.get(key)
        if t is None:
            unknown.append(sub)
            del obj[key]
            continue
        value = obj[key]
        kind, inner = schema.parse_type(t)
        if kind == "model":
            unknown += prune_unknown(value, inner, sub)
        elif kind == "list" and isinstance(value, list):
            ik, ii = schema.parse_type(inner)
            if ik == "model":
                for i, item in enumerate(value):
                    unknown += prune_unknown(item, ii, f"{sub}[{i}]")
        elif kind == "map" and isinstance(value, dict):
            ik, ii = schema.parse_type(inner)
            if ik == "model":
                for k, item in value.items():
                    unknown += prune_unknown(item, ii, f"{sub}[{k}]")
            elif key in _QUANTITY_MAPS:
                for k in value:
                    value[k] = _num_to_str(value[k])
        elif kind == "prim" and inner == "str" and key in _QUANTITY_FIELDS:
            obj[key] = _num_to_str(value)
    return unknown
