"""Reading the caller's credential from gRPC metadata, the same way everywhere."""

from __future__ import annotations

import grpc


def credential_from(context: grpc.aio.ServicerContext) -> str:
    """The bearer token or API key in the call's metadata ("" if none).

    Accepts `authorization: Bearer <token>` and `x-api-key: <key>`.
    """
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
        if key == "x-api-key" and isinstance(value, str):
            return value.strip()
    return ""


ADMIN_SCOPE = "admin"
"""The scope that admits a caller to the management RPCs of every service (auth's
key and usage RPCs, the cache's GetStats and Flush, anyone's batches)."""


def within_deadline(remaining: float | None, limit: float) -> float:
    """A timeout for a call made on behalf of a caller: `limit`, or less when the
    caller's own deadline (`context.time_remaining()`) comes sooner."""
    return limit if remaining is None else max(min(limit, remaining), 0.001)
