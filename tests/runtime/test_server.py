"""The shared runtime: interceptor (request id, metrics, error mapping),
health, reflection, /metrics and graceful shutdown, on a real grpc.aio server."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from headrace.services.runtime.errors import InvalidArgument, ResourceExhausted
from headrace.services.runtime.logs import request_id_var
from headrace.services.runtime.server import Service, serve
from headrace.services.runtime.settings import ServiceSettings
from tests.support.ports import free_port

SERVICE = "headrace.test.v1.ProbeService"
_IDENTITY = {"request_deserializer": None, "response_serializer": None}


async def _whoami(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request_id_var.get().encode()


async def _fail(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if request == b"invalid":
        raise InvalidArgument("prompt is empty: send some text")
    if request == b"busy":
        raise ResourceExhausted("busy; retry shortly", retry_after_s=2.5)
    raise RuntimeError("secret internal detail")


async def _slow_stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for i in range(int(request or b"5")):
        await asyncio.sleep(0.1)
        yield str(i).encode()


class Probe:
    """A server running the runtime with a probe service, on free ports."""

    def __init__(self) -> None:
        self.settings = ServiceSettings(port=free_port(), metrics_port=free_port(), grace_seconds=5)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def register(self, server: grpc.aio.Server) -> list[str]:
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    SERVICE,
                    {
                        "WhoAmI": grpc.unary_unary_rpc_method_handler(_whoami, **_IDENTITY),
                        "Fail": grpc.unary_unary_rpc_method_handler(_fail, **_IDENTITY),
                        "Slow": grpc.unary_stream_rpc_method_handler(_slow_stream, **_IDENTITY),
                    },
                )
            ]
        )
        return [SERVICE]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.settings.port}"

    async def __aenter__(self) -> Probe:
        self.task = asyncio.create_task(
            serve(Service("probe", self.settings, self.register), self.stop)
        )
        for _ in range(100):
            await asyncio.sleep(0.05)
            async with grpc.aio.insecure_channel(self.target) as channel:
                try:
                    await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=0.5
                    )
                    return self
                except grpc.aio.AioRpcError:
                    continue
        raise TimeoutError("probe server did not start")

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await self.task


@pytest.fixture(scope="module")
async def probe() -> AsyncIterator[Probe]:
    async with Probe() as running:
        yield running


def _metrics(probe: Probe) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{probe.settings.metrics_port}/metrics") as r:
        return r.read().decode()


async def test_request_id_from_metadata_is_bound_for_the_handler(probe: Probe) -> None:
    async with grpc.aio.insecure_channel(probe.target) as channel:
        call = channel.unary_unary(f"/{SERVICE}/WhoAmI")
        assert await call(b"", metadata=(("x-request-id", "rid-123"),)) == b"rid-123"
        generated = await call(b"")
    assert len(generated) == 32, "a request without an id gets a fresh one"


async def test_domain_errors_map_to_status_codes_with_their_message(probe: Probe) -> None:
    async with grpc.aio.insecure_channel(probe.target) as channel:
        call = channel.unary_unary(f"/{SERVICE}/Fail")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(b"invalid")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == "prompt is empty: send some text"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(b"busy")
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ("retry-after", "2.500") in tuple(info.value.trailing_metadata())


async def test_unexpected_errors_are_internal_without_leaking_details(probe: Probe) -> None:
    async with grpc.aio.insecure_channel(probe.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(f"/{SERVICE}/Fail")(
                b"boom", metadata=(("x-request-id", "r-9"),)
            )
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in info.value.details()
    assert "r-9" in info.value.details()


async def test_metrics_count_requests_by_code_latency_and_in_flight(probe: Probe) -> None:
    async with grpc.aio.insecure_channel(probe.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary(f"/{SERVICE}/Fail")(b"invalid")
        async for _ in channel.unary_stream(f"/{SERVICE}/Slow")(b"2"):
            pass
    text = await asyncio.to_thread(_metrics, probe)
    assert (
        'grpc_server_handled_total{grpc_code="INVALID_ARGUMENT",grpc_method="Fail",'
        f'grpc_service="{SERVICE}",grpc_type="unary"}}' in text
    )
    assert f'grpc_method="Slow",grpc_service="{SERVICE}",grpc_type="server_stream"' in text
    assert "grpc_server_handling_seconds_bucket" in text
    assert "grpc_server_in_flight" in text


async def test_health_and_reflection_are_served(probe: Probe) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with grpc.aio.insecure_channel(probe.target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE)
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name async for r in stream for s in r.list_services_response.service}
    assert SERVICE in names


async def test_stop_drains_in_flight_streams_and_refuses_new_calls() -> None:
    async with Probe() as probe:
        channel = grpc.aio.insecure_channel(probe.target)
        stream = channel.unary_stream(f"/{SERVICE}/Slow")(b"8")
        first = await stream.read()
        assert first == b"0"
        probe.stop.set()  # what SIGTERM does
        rest = []
        while (message := await stream.read()) is not grpc.aio.EOF:
            rest.append(message)
        assert rest == [str(i).encode() for i in range(1, 8)], "the in-flight stream finished"
        assert await stream.code() == grpc.StatusCode.OK
        await channel.close()
        assert probe.task is not None
        await asyncio.wait_for(probe.task, 10)
        async with grpc.aio.insecure_channel(probe.target) as late:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await late.unary_unary(f"/{SERVICE}/WhoAmI")(b"", timeout=1)
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
