"""How the router reports a failed call to an internal service."""

from __future__ import annotations

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata

from headrace.services.router.backends import upstream_error
from headrace.services.runtime.errors import Unavailable


def rpc_error(code: grpc.StatusCode, details: str) -> AioRpcError:
    return AioRpcError(code, Metadata(), Metadata(), details=details)


@pytest.mark.parametrize(
    "details",
    [
        "Stream removed (RST_STREAM (Received RST_STREAM with error code 2))",
        "Socket closed",
        "Internal error from Core",  # a message sent on a stream already reset
    ],
)
def test_a_stream_reset_mid_way_is_unavailable_naming_the_service(details: str) -> None:
    # What gRPC reports when Envoy resets a stream whose upstream died mid-response.
    error = upstream_error("inference", rpc_error(grpc.StatusCode.INTERNAL, details))
    assert isinstance(error, Unavailable)
    assert "inference" in error.message and "retry the request" in error.message


def test_unavailable_is_unavailable_naming_the_service() -> None:
    error = upstream_error("auth", rpc_error(grpc.StatusCode.UNAVAILABLE, "upstream connect error"))
    assert isinstance(error, Unavailable)
    assert "auth" in error.message and "retry" in error.message


def test_other_statuses_pass_through_unchanged() -> None:
    # A service's own INTERNAL (a bug there) is not dressed up as an outage.
    for code, details in [
        (grpc.StatusCode.INTERNAL, "internal error; quote request id r1 when reporting it"),
        (grpc.StatusCode.PERMISSION_DENIED, "blocked"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "busy"),
    ]:
        original = rpc_error(code, details)
        assert upstream_error("inference", original) is original
