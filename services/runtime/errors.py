"""Typed domain errors. Domain code raises these; one interceptor maps them to gRPC status.

Every message must tell a person what to do next, and must never echo secrets.
"""

from __future__ import annotations

import grpc
import grpc.aio


class HeadraceError(Exception):
    """Base of the errors that map to a gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, trailers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.trailers = trailers or {}


class InvalidArgument(HeadraceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(HeadraceError):
    code = grpc.StatusCode.NOT_FOUND


class Unauthenticated(HeadraceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(HeadraceError):
    """The system is not set up for this request (e.g. a model without a chat template)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(HeadraceError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(HeadraceError):
    """Over a limit. retry_after_s goes to the `retry-after` trailer (seconds)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        trailers = {}
        if retry_after_s is not None:
            trailers["retry-after"] = f"{max(retry_after_s, 0.0):.3f}"
        super().__init__(message, trailers=trailers)
        self.retry_after_s = retry_after_s


class Unavailable(HeadraceError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(HeadraceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


def status_code(exc: BaseException) -> grpc.StatusCode | None:
    """The gRPC status an exception stands for: a typed error's, or a failed call's
    (grpc.aio.AioRpcError passed through from another service); None for others."""
    if isinstance(exc, HeadraceError):
        return exc.code
    if isinstance(exc, grpc.aio.AioRpcError):
        code: grpc.StatusCode = exc.code()
        return code
    return None
