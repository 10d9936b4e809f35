"""The Python client: retries UNAVAILABLE only before the first message, honours the
deadline across retries, and runs many prompts with bounded concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from headrace.client import Client, sampling_params
from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.types.v1 import types_pb2
from tests.support.ports import free_port


class FlakyRouter(router_pb2_grpc.RouterServiceServicer):
    """Fails the first `fail_before` calls at once, and the next `fail_after` after
    one message; then answers with the prompt echoed in two pieces."""

    def __init__(self, fail_before: int = 0, fail_after: int = 0) -> None:
        self.fail_before = fail_before
        self.fail_after = fail_after
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0

    async def Generate(
        self, request: router_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.GenerateResponse]:
        self.calls += 1
        if self.calls <= self.fail_before:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no healthy upstream")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield router_pb2.GenerateResponse(text=request.prompt[:2])
            if self.calls <= self.fail_before + self.fail_after:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "replica died")
            await asyncio.sleep(0.02)
            yield router_pb2.GenerateResponse(
                text=request.prompt[2:],
                finish_reason=types_pb2.FINISH_REASON_STOP,
                usage=types_pb2.Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3),
            )
        finally:
            self.in_flight -= 1


async def serve(router: FlakyRouter) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    router_pb2_grpc.add_RouterServiceServicer_to_server(router, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, f"127.0.0.1:{port}"


async def test_unavailable_before_the_first_message_is_retried() -> None:
    router = FlakyRouter(fail_before=2)
    server, target = await serve(router)
    try:
        async with Client(target, retries=3, backoff_s=0.01) as client:
            result = await client.generate("hello")
        assert result.text == "hello" and result.finish_reason == "FINISH_REASON_STOP"
        assert router.calls == 3
    finally:
        await server.stop(None)


async def test_an_error_after_text_is_never_retried() -> None:
    router = FlakyRouter(fail_after=1)
    server, target = await serve(router)
    try:
        async with Client(target, retries=3, backoff_s=0.01) as client:
            seen = []
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for message in client.stream("hello"):
                    seen.append(message.text)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert seen == ["he"] and router.calls == 1, "text is never repeated"
    finally:
        await server.stop(None)


async def test_retries_stop_at_the_deadline() -> None:
    router = FlakyRouter(fail_before=100)
    server, target = await serve(router)
    try:
        async with Client(target, retries=50, backoff_s=0.05) as client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(grpc.aio.AioRpcError):
                await client.generate("hello", timeout=0.4)
            assert loop.time() - started < 1.0
    finally:
        await server.stop(None)


async def test_generate_many_keeps_order_and_bounds_concurrency() -> None:
    router = FlakyRouter()
    server, target = await serve(router)
    try:
        async with Client(target) as client:
            prompts = [f"p{i:02d}" for i in range(10)]
            results = await client.generate_many(
                prompts, concurrency=3, params=sampling_params(max_tokens=4)
            )
        assert [r.text for r in results] == prompts  # type: ignore[union-attr]
        assert router.max_in_flight <= 3
    finally:
        await server.stop(None)
