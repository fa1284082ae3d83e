"""Errors of the CRI runtime that carry their gRPC status code to the service layer."""

from __future__ import annotations

import grpc


class CRIError(Exception):
    """A failure answered to the CRI client with `code` and `message`, verbatim."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def not_found(kind: str, ident: str) -> CRIError:
    return CRIError(grpc.StatusCode.NOT_FOUND, f"{kind} {ident!r} not found")


def invalid(message: str) -> CRIError:
    return CRIError(grpc.StatusCode.INVALID_ARGUMENT, message)


def failed(message: str) -> CRIError:
    return CRIError(grpc.StatusCode.UNKNOWN, message)
