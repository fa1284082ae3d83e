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


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _go_type(t: str, key: str) -> str:
    kind, inner = schema.parse_type(t)
    if kind == "list":
        return "[]" + _go_type(inner, "")
    if kind == "map":
        return "map[string]" + _go_type(inner, "")
    if kind == "model":
        from kubenode.server.apiserver.openapi import short_name
        return f"v1.{short_name(inner)}"
    return {"str": "string", "bool": "bool", "float": "float64", "datetime": "v1.Time",
            "int": "int64" if key.endswith("Seconds") else "int32"}.get(inner, inner)


def _fits(t: str, value: Any) -> bool:
    kind, inner = schema.parse_type(t)
    if value is None:
        return True
    if kind == "list":
        return isinstance(value, list)
    if kind in ("map", "model"):
        return isinstance(value, dict)
    if inner == "str" or inner in ("datetime", "date", "bytearray", "bytes"):
        return isinstance(value, str)
    if inner == "int":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer())
    if inner == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if inner == "bool":
        return isinstance(value, bool)
    return True  # object: int-or-string, raw extensions


def type_error(obj: Any, model: str, path: str = "") -> str | None:
    """The first value whose JSON type does not fit the schema, in encoding/json's words
    (`json: cannot unmarshal string into Go struct field ContainerPort.spec.containers.
    ports.containerPort of type int32`), or None."""
    if not isinstance(obj, dict):
        return None
    fields = schema.fields_of(model)
    for key, value in obj.items():
        t = fields.get(key)
        if t is None or value is None:
            continue
        sub = f"{path}.{key}" if path else key
        if not _fits(t, value):
            from kubenode.server.apiserver.openapi import short_name
            return (f"json: cannot unmarshal {_json_type(value)} into Go struct field "
                    f"{short_name(model)}.{sub} of type {_go_type(t, key)}")
        kind, inner = schema.parse_type(t)
        if kind == "model":
            err = type_error(value, inner, sub)
        elif kind in ("list", "map"):
            ik, ii = schema.parse_type(inner)
            items = value if kind == "list" else list(value.values())
            err = None
            for item in items:
                if item is None:
                    continue
                if not _fits(inner, item):
                    return (f"json: cannot unmarshal {_json_type(item)} into Go struct field "
                            f"{short_name_of(model)}.{sub} of type {_go_type(inner, '')}")
                if ik == "model":
                    err = type_error(item, ii, sub)
                    if err:
                        break
        else:
            err = None
        if err:
            return err
    return None


def short_name_of(model: str) -> str:
    from kubenode.server.apiserver.openapi import short_name
    return short_name(model)
