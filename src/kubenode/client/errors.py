"""API errors: an `ApiError` carries the server's `Status` object (kind Status, code,
reason, message, details), as returned by kube-apiserver for every failed request.

When the server answers without a Status body (a proxy, a plain-text 502...), a Status
is synthesized from the HTTP code with upstream's reason for that code."""

from __future__ import annotations

from typing import Any

# upstream metav1.StatusReason for the HTTP codes the API server uses
REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_for(code: int, message: str, reason: str | None = None) -> dict[str, Any]:
    """A metav1.Status object for a failure with this HTTP code."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason if reason is not None else REASONS.get(code, "Unknown"),
        "code": code,
    }


class ApiError(Exception):
    """A failed API request; `status` is the Status object."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status
        super().__init__(f"{self.code} {self.reason}: {self.message}")

    @property
    def code(self) -> int:
        return int(self.status.get("code") or 0)

    @property
    def reason(self) -> str:
        return str(self.status.get("reason") or "")

    @property
    def message(self) -> str:
        return str(self.status.get("message") or "")

    @property
    def details(self) -> dict[str, Any]:
        details: dict[str, Any] = self.status.get("details") or {}
        return details

    @property
    def not_found(self) -> bool:
        return self.code == 404

    @property
    def conflict(self) -> bool:
        return self.code == 409

    @property
    def already_exists(self) -> bool:
        return self.code == 409 and self.reason == "AlreadyExists"

    @property
    def gone(self) -> bool:
        """410: the requested resourceVersion is too old (watch must relist)."""
        return self.code == 410
