"""Tracing in the shared runtime: off costs nothing, on continues the caller's trace."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from headrace.services.runtime import tracing
from headrace.services.runtime.interceptors import outgoing_metadata
from headrace.services.runtime.logs import request_id_var


def test_off_by_default_nothing_is_injected_and_the_sdk_is_never_imported() -> None:
    code = (
        "import sys\n"
        "from headrace.services.runtime import server, tracing\n"
        "from headrace.services.runtime.interceptors import outgoing_metadata\n"
        "from headrace.services.runtime.settings import ServiceSettings\n"
        "assert not ServiceSettings().tracing_enabled and not tracing.enabled()\n"
        "assert all(k != 'traceparent' for k, _ in outgoing_metadata())\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry.sdk')]\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    tracing.configure("router", "http://unused", exporter=memory)
    yield memory
    tracing.shutdown()


def test_a_server_span_continues_the_callers_trace_and_passes_it_on(
    exporter: InMemorySpanExporter,
) -> None:
    caller_trace, caller_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    incoming = [("traceparent", f"00-{caller_trace}-{caller_span}-01")]
    token = request_id_var.set("rid-1")
    try:
        with tracing.server_span("svc/Method", incoming, {"headrace.request_id": "rid-1"}) as span:
            assert tracing.current_span() is span
            ids = tracing.log_ids()
            outgoing = dict(outgoing_metadata())
    finally:
        request_id_var.reset(token)
    tracing.shutdown()  # flush
    (finished,) = exporter.get_finished_spans()
    assert f"{finished.context.trace_id:032x}" == caller_trace
    assert f"{finished.parent.span_id:016x}" == caller_span
    assert finished.attributes["headrace.request_id"] == "rid-1"
    own = f"{finished.context.span_id:016x}"
    # The callee's parent is this span, in the same trace; logs name both ids.
    assert outgoing["traceparent"] == f"00-{caller_trace}-{own}-01"
    assert outgoing["x-request-id"] == "rid-1"
    assert ids == {"trace_id": caller_trace, "span_id": own}
    assert tracing.current_span() is None
