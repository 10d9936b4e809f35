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
