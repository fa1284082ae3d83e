"""OpenAPI v2 in protobuf, as kubectl asks for it
(`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`, gnostic's
`openapi.v2.Document`). A small hand-written protobuf wire encoder for the part of the
message tree kubectl reads: swagger, info and definitions (schemas with type, format,
description, required, $ref, items, allOf, properties, additionalProperties and vendor
extensions as YAML). Field numbers follow gnostic's OpenAPIv2.proto.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

MEDIA_TYPE = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(num: int, payload: bytes) -> bytes:
    return _varint((num << 3) | 2) + _varint(len(payload)) + payload


def _str(num: int, value: str) -> bytes:
    return _len_field(num, value.encode()) if value else b""


def _any_yaml(value: Any) -> bytes:
    text = yaml.safe_dump(json.loads(json.dumps(value)), default_flow_style=False)
    return _str(2, text)


def _named_any(name: str, value: Any) -> bytes:
    return _str(1, name) + _len_field(2, _any_yaml(value))


def encode_schema(s: dict[str, Any]) -> bytes:
    out = bytearray()
    out += _str(1, s.get("$ref", ""))
    out += _str(2, s.get("format", ""))
    out += _str(4, s.get("description", ""))
    for r in s.get("required") or []:
        out += _str(19, r)
    ap = s.get("additionalProperties")
    if isinstance(ap, dict):
        out += _len_field(21, _len_field(1, encode_schema(ap)))
    elif isinstance(ap, bool):
        out += _len_field(21, _varint((2 << 3) | 0) + _varint(int(ap)))
    if s.get("type"):
        out += _len_field(22, _str(1, s["type"]))
    if isinstance(s.get("items"), dict):
        out += _len_field(23, _len_field(1, encode_schema(s["items"])))
    for sub in s.get("allOf") or []:
        out += _len_field(24, encode_schema(sub))
    props = s.get("properties")
    if props:
        payload = b"".join(_len_field(1, _str(1, k) + _len_field(2, encode_schema(v)))
                           for k, v in props.items())
        out += _len_field(25, payload)
    for k, v in s.items():
        if k.startswith("x-"):
            out += _len_field(31, _named_any(k, v))
    return bytes(out)


def encode_document(doc: dict[str, Any]) -> bytes:
    out = bytearray()
    out += _str(1, doc.get("swagger", "2.0"))
    info = doc.get("info") or {}
    out += _len_field(2, _str(1, info.get("title", "")) + _str(2, info.get("version", "")))
    out += _len_field(8, b"")
    defs = doc.get("definitions") or {}
    payload = b"".join(_len_field(1, _str(1, name) + _len_field(2, encode_schema(s)))
                       for name, s in defs.items())
    out += _len_field(9, payload)
    return bytes(out)
