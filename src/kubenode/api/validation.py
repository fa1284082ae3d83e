"""Field errors and name validators with upstream's wording
(k8s.io/apimachinery/pkg/util/validation and .../field)."""

from __future__ import annotations

import json
import re
from typing import Any

from kubenode.api.errors import StatusCause

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _q(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value) if value is not None else "null"


def required(field: str, detail: str = "") -> StatusCause:
    return StatusCause(type="FieldValueRequired",
                       message="Required value" + (f": {detail}" if detail else ""), field=field)


def invalid(field: str, value: Any, detail: str) -> StatusCause:
    return StatusCause(type="FieldValueInvalid",
                       message=f"Invalid value: {_q(value)}: {detail}", field=field)


def not_supported(field: str, value: Any, supported: list[str]) -> StatusCause:
    vals = ", ".join(json.dumps(s) for s in supported)
    return StatusCause(type="FieldValueNotSupported",
                       message=f"Unsupported value: {_q(value)}: supported values: {vals}",
                       field=field)


def duplicate(field: str, value: Any) -> StatusCause:
    return StatusCause(type="FieldValueDuplicate", message=f"Duplicate value: {_q(value)}",
                       field=field)


def forbidden(field: str, detail: str) -> StatusCause:
    return StatusCause(type="FieldValueForbidden", message=f"Forbidden: {detail}", field=field)


def dns1123_label(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1123_LABEL.match(value):
        errs.append("a lowercase RFC 1123 label must consist of lower case alphanumeric "
                    "characters or '-', and must start and end with an alphanumeric character "
                    "(e.g. 'my-name',  or '123-abc', regex used for validation is "
                    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
    return errs


def dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.match(value):
        errs.append("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                    "characters, '-' or '.', and must start and end with an alphanumeric "
                    "character (e.g. 'example.com', regex used for validation is "
                    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
    return errs


def dns1035_label(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _DNS1035_LABEL.match(value):
        errs.append("a DNS-1035 label must consist of lower case alphanumeric characters or "
                    "'-', start with an alphabetic character, and end with an alphanumeric "
                    "character (e.g. 'my-name',  or 'abc-123', regex used for validation is "
                    "'[a-z]([-a-z0-9]*[a-z0-9])?')")
    return errs


def qualified_name(value: str) -> list[str]:
    prefix, sep, name = value.rpartition("/")
    errs = []
    if sep and (not prefix or dns1123_subdomain(prefix)):
        errs.append("prefix part " + (dns1123_subdomain(prefix) or ["must be non-empty"])[0])
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63 or not _QUALIFIED_NAME.match(name):
        errs.append("name part must consist of alphanumeric characters, '-', '_' or '.', and "
                    "must start and end with an alphanumeric character (e.g. 'MyName',  or "
                    "'my.name',  or '123-abc', regex used for validation is "
                    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
    return errs


def label_value(value: str) -> list[str]:
    if len(value) > 63:
        return ["must be no more than 63 characters"]
    if not _LABEL_VALUE.match(value):
        return ["a valid label must be an empty string or consist of alphanumeric characters, "
                "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
                "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
                "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"]
    return []


def validate_labels(labels: Any, field: str) -> list[StatusCause]:
    out: list[StatusCause] = []
    if labels is None:
        return out
    if not isinstance(labels, dict):
        return [invalid(field, labels, "must be a map")]
    for k, v in labels.items():
        for e in qualified_name(k):
            out.append(invalid(field, k, e))
        if not isinstance(v, str):
            out.append(invalid(f"{field}[{k}]", v, "must be a string"))
            continue
        for e in label_value(v):
            out.append(invalid(field, v, e))
    return out


def path_segment_name(value: str) -> list[str]:
    """upstream path.ValidatePathSegmentName (RBAC objects)."""
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    for bad in ("/", "%"):
        if bad in value:
            return [f"may not contain '{bad}'"]
    return []
