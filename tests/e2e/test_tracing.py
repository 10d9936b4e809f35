"""Tracing on: one Generate is one OpenTelemetry trace across the five services.

A tiny OTLP/HTTP collector runs inside the test; the suite exports to it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.types.v1 import types_pb2
from tests.support.otlp import Collector, attributes
from tests.support.suite import RunningSuite, running_suite

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.server.shutdown()


@pytest.fixture(scope="module")
def suite(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, collector: Collector
) -> Iterator[RunningSuite]:
    with running_suite(
        tmp_path_factory.mktemp("tracing-home"),
        tiny_model,
        extra_env={
            "HEADRACE_TRACING_ENABLED": "true",
            "HEADRACE_TRACING_ENDPOINT": collector.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: export promptly for the test
        },
    ) as running:
        yield running


def router_span(collector: Collector, request_id: str) -> object | None:
    with collector.lock:
        for svc, span in collector.spans:
            if (
                svc == "headrace-router"
                and span.name.endswith("/Generate")
                and attributes(span).get("headrace.request_id") == request_id
            ):
                return span
    return None


def test_one_generate_is_one_trace_across_every_service_with_the_request_id(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub, collector: Collector
) -> None:
    request_id = f"trace-{uuid.uuid4().hex[:12]}"
    request = router_pb2.GenerateRequest(
        prompt=f"Trace me {uuid.uuid4().hex[:6]}",
        params=types_pb2.SamplingParams(max_tokens=4, temperature=0.0),
    )
    metadata = (("authorization", f"Bearer {suite.token('tracer')}"), ("x-request-id", request_id))
    messages = list(stub.Generate(request, metadata=metadata, timeout=30))
    assert messages[-1].request_id == request_id

    collector.wait_for(lambda: router_span(collector, request_id) is not None)
    root = router_span(collector, request_id)
    assert root is not None
    expected = {
        "headrace-auth": "headrace.auth.v1.AuthService/Authorize",
        "headrace-sanitizer": "headrace.sanitizer.v1.SanitizerService/CheckPrompt",
        "headrace-cache": "headrace.cache.v1.CacheService/Answer",
        "headrace-inference": "headrace.inference.v1.InferenceService/Generate",
    }

    def complete() -> bool:
        names = {(svc, s.name) for svc, s in collector.trace(root.trace_id)}
        return all(item in names for item in expected.items())

    collector.wait_for(complete)
    spans = collector.trace(root.trace_id)
    # The output filter runs in the router's process: no FilterStream hop to trace.
    assert not any(s.name.endswith("/FilterStream") for _, s in spans)
    for service, name in expected.items():
        child = next(s for svc, s in spans if svc == service and s.name == name)
        # Each service's span is a child of the router's, across Envoy's hop.
        assert child.parent_span_id == root.span_id, name
        assert attributes(child)["headrace.request_id"] == request_id
        assert child.kind == child.SPAN_KIND_SERVER
    root_attrs = attributes(root)
    assert root_attrs["headrace.model"] == "tiny"
    assert root_attrs["headrace.completion_tokens"] == 4
    assert any(e.name == "first_token" for e in root.events)
    # cache.Answer lasts as long as the response it stores; its lookup's end is an event.
    cache = next(s for _, s in spans if s.name == expected["headrace-cache"])
    [looked_up] = [e for e in cache.events if e.name == "looked_up"]
    assert looked_up.time_unix_nano < cache.end_time_unix_nano
    inference = next(s for _, s in spans if s.name == expected["headrace-inference"])
    assert attributes(inference)["headrace.completion_tokens"] == 4
    # The audit line names the same request id.
    audit = "".join(p.read_text() for p in (suite.home / "audit").glob("*"))
    assert any(
        json.loads(line).get("request_id") == request_id for line in audit.splitlines() if line
    )


def test_a_refused_request_is_an_error_span(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub, collector: Collector
) -> None:
    request_id = f"bad-{uuid.uuid4().hex[:12]}"
    request = router_pb2.GenerateRequest(prompt="Hello")
    metadata = (("authorization", "Bearer not.a.token"), ("x-request-id", request_id))
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(request, metadata=metadata, timeout=30))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    collector.wait_for(lambda: router_span(collector, request_id) is not None)
    root = router_span(collector, request_id)
    assert root.status.code == root.status.STATUS_CODE_ERROR
    assert root.status.message == "UNAUTHENTICATED"
