"""The runtime interceptor: one wrapper maps errors and counts calls the same way for
unary and streaming RPCs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client import REGISTRY

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.services.runtime.errors import InvalidArgument
from headrace.services.runtime.interceptors import ServiceInterceptor
from tests.support.ports import free_port

SERVICE = "headrace.router.v1.RouterService"


class Failing(router_pb2_grpc.RouterServiceServicer):
    async def ListModels(self, request, context):  # type: ignore[no-untyped-def]
        if context.invocation_metadata() and ("fail", "bug") in context.invocation_metadata():
            raise RuntimeError("a bug with a secret inside")
        raise InvalidArgument("unary: say what to fix")

    async def Generate(self, request, context) -> AsyncIterator[router_pb2.GenerateResponse]:  # type: ignore[no-untyped-def]
        yield router_pb2.GenerateResponse(text="first")
        if request.prompt == "bug":
            raise RuntimeError("a bug with a secret inside")
        raise InvalidArgument("streaming: say what to fix")


def handled(method: str, kind: str, code: str) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": method, "grpc_type": kind, "grpc_code": code}
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


@pytest.fixture
async def stub() -> AsyncIterator[router_pb2_grpc.RouterServiceStub]:
    server = grpc.aio.server(interceptors=[ServiceInterceptor()])
    router_pb2_grpc.add_RouterServiceServicer_to_server(Failing(), server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield router_pb2_grpc.RouterServiceStub(channel)
    await server.stop(None)


async def test_a_typed_error_is_its_status_for_unary_and_streaming_alike(
    stub: router_pb2_grpc.RouterServiceStub,
) -> None:
    before = (
        handled("ListModels", "unary", "INVALID_ARGUMENT"),
        handled("Generate", "server_stream", "INVALID_ARGUMENT"),
    )
    with pytest.raises(grpc.aio.AioRpcError) as unary:
        await stub.ListModels(router_pb2.ListModelsRequest())
    assert unary.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert unary.value.details() == "unary: say what to fix"
    call = stub.Generate(router_pb2.GenerateRequest(prompt="x"))
    texts = []
    with pytest.raises(grpc.aio.AioRpcError) as streaming:
        async for message in call:
            texts.append(message.text)
    assert texts == ["first"]
    assert streaming.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert streaming.value.details() == "streaming: say what to fix"
    assert (
        handled("ListModels", "unary", "INVALID_ARGUMENT"),
        handled("Generate", "server_stream", "INVALID_ARGUMENT"),
    ) == (before[0] + 1, before[1] + 1)


async def test_an_unexpected_error_is_internal_with_the_request_id_and_no_internals(
    stub: router_pb2_grpc.RouterServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unary:
        await stub.ListModels(
            router_pb2.ListModelsRequest(), metadata=(("fail", "bug"), ("x-request-id", "r-1"))
        )
    with pytest.raises(grpc.aio.AioRpcError) as streaming:
        async for _ in stub.Generate(
            router_pb2.GenerateRequest(prompt="bug"), metadata=(("x-request-id", "r-2"),)
        ):
            pass
    for info, rid in ((unary, "r-1"), (streaming, "r-2")):
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert rid in info.value.details() and "secret" not in info.value.details()
