"""API errors as Kubernetes `Status` objects (upstream k8s.io/apimachinery/pkg/api/errors).

`StatusError` carries the HTTP code, the reason and the details; `to_status()` renders the
`meta/v1 Status` body that every API response for a failure carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class StatusCause:
    type: str
    message: str
    field: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.type, "message": self.message}
        if self.field:
            out["field"] = self.field
        return out


@dataclass(kw_only=True)
class StatusError(Exception):
    code: int
    reason: str
    message: str
    group: str = ""
    kind: str = ""
    name: str = ""
    causes: list[StatusCause] = field(default_factory=list)
    retry_after: int = 0

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        details: dict[str, Any] = {}
        if self.name:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = [c.to_dict() for c in self.causes]
        if self.retry_after:
            details["retryAfterSeconds"] = self.retry_after
        if details:
            status["details"] = details
        return status


def _qualified(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def not_found(*, resource: str, group: str = "", name: str) -> StatusError:
    qr = _qualified(resource, group)
    return StatusError(code=404, reason="NotFound", message=f'{qr} "{name}" not found',
                       group=group, kind=resource, name=name)


def already_exists(*, resource: str, group: str = "", name: str) -> StatusError:
    qr = _qualified(resource, group)
    return StatusError(code=409, reason="AlreadyExists",
                       message=f'{qr} "{name}" already exists',
                       group=group, kind=resource, name=name)


def conflict(*, resource: str, group: str = "", name: str, detail: str) -> StatusError:
    qr = _qualified(resource, group)
    return StatusError(code=409, reason="Conflict",
                       message=f'Operation cannot be fulfilled on {qr} "{name}": {detail}',
                       group=group, kind=resource, name=name)


STALE_OBJECT = ("the object has been modified; please apply your changes to the latest "
                "version and try again")


def invalid(*, kind: str, group: str = "", name: str, causes: list[StatusCause]) -> StatusError:
    parts = []
    for c in causes:
        parts.append(f"{c.field}: {c.message}" if c.field else c.message)
    gk = f"{kind}.{group}" if group else kind
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return StatusError(code=422, reason="Invalid",
                       message=f'{gk} "{name}" is invalid: {joined}',
                       group=group, kind=kind, name=name, causes=causes)


def bad_request(message: str) -> StatusError:
    return StatusError(code=400, reason="BadRequest", message=message)


def forbidden(*, user: str, verb: str, resource: str, group: str, name: str = "",
              namespace: str = "", reason: str = "") -> StatusError:
    qr = _qualified(resource, group)
    msg = f'{qr} '
    msg += f'"{name}" ' if name else ""
    msg += f'is forbidden: User "{user}" cannot {verb} resource "{resource}" in API group "{group}"'
    msg += f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    if reason:
        msg += f": {reason}"
    return StatusError(code=403, reason="Forbidden", message=msg, group=group, kind=resource,
                       name=name)


def forbidden_because(*, resource: str, group: str = "", name: str,
                      reason: str) -> StatusError:
    """403 for a reason other than authorization (upstream NewForbidden): admission,
    protected objects, disruption budgets."""
    qr = _qualified(resource, group)
    return StatusError(code=403, reason="Forbidden",
                       message=f'{qr} "{name}" is forbidden: {reason}',
                       group=group, kind=resource, name=name)


def unauthorized(message: str = "Unauthorized") -> StatusError:
    return StatusError(code=401, reason="Unauthorized", message=message)


def gone(message: str) -> StatusError:
    return StatusError(code=410, reason="Expired", message=message)


def method_not_allowed(message: str) -> StatusError:
    return StatusError(code=405, reason="MethodNotAllowed", message=message)


def not_acceptable(message: str) -> StatusError:
    return StatusError(code=406, reason="NotAcceptable", message=message)


def unsupported_media_type(message: str) -> StatusError:
    return StatusError(code=415, reason="UnsupportedMediaType", message=message)


def service_unavailable(message: str) -> StatusError:
    return StatusError(code=503, reason="ServiceUnavailable", message=message)


def internal_error(message: str) -> StatusError:
    return StatusError(code=500, reason="InternalError",
                       message=f"Internal error occurred: {message}")


def too_large(message: str) -> StatusError:
    return StatusError(code=413, reason="RequestEntityTooLarge", message=message)


def too_large_resource_version(requested: int, current: int) -> StatusError:
    """A list or watch at a resourceVersion the storage has not reached (upstream
    storage.NewTooLargeResourceVersionError): 504 Timeout, retry after 1 s."""
    return StatusError(code=504, reason="Timeout",
                       message=f"Too large resource version: {requested}, current: {current}",
                       causes=[StatusCause(type="ResourceVersionTooLarge",
                                           message="Too large resource version")],
                       retry_after=1)
