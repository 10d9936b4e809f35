"""OpenTelemetry tracing, off by default (`HEADRACE_TRACING_ENABLED=true`).

When on, every RPC a service serves is a SERVER span whose parent comes from the
caller's W3C `traceparent` metadata, and every call a service makes (through
`outgoing_metadata()`) carries the current span onward, so one Generate is one trace
across router, auth, sanitizer, cache and inference (Envoy passes `traceparent`
through untouched). Spans carry `headrace.request_id`, the id in logs and the audit
line. Spans leave in batches over OTLP/HTTP (protobuf) to `tracing_endpoint`; a
service flushes them when it stops.

When off, nothing here runs per request: `enabled()` is False and the OpenTelemetry
SDK is never imported.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

_tracer: Tracer | None = None
_provider: TracerProvider | None = None


def enabled() -> bool:
    return _tracer is not None


def configure(
    service: str,
    endpoint: str,
    sample_ratio: float = 1.0,
    exporter: Any | None = None,
) -> None:
    """Install a tracer provider for this process (`exporter` replaces OTLP in tests)."""
    global _tracer, _provider
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint)
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"headrace-{service}"}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    _tracer = provider.get_tracer("headrace")


def shutdown() -> None:
    """Flush and stop the exporter (on SIGTERM, after the server has drained)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


@contextmanager
def server_span(
    name: str, metadata: Iterable[tuple[str, Any]] | None, attributes: dict[str, Any]
) -> Iterator[Span]:
    """A SERVER span for one RPC, continuing the caller's trace, current while it runs."""
    from opentelemetry import context, trace
    from opentelemetry.propagate import extract

    assert _tracer is not None
    carrier = {k: v for k, v in (metadata or ()) if isinstance(v, str)}
    parent = extract(carrier)
    span = _tracer.start_span(
        name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes
    )
    token = context.attach(trace.set_span_in_context(span, parent))
    try:
        yield span
    finally:
        span.end()
        try:
            context.detach(token)
        except ValueError:  # ended in another context (a cancelled stream): harmless
            pass


def inject(carrier: MutableMapping[str, str]) -> None:
    """Add the current span's `traceparent` (and `tracestate`) to outgoing metadata."""
    from opentelemetry.propagate import inject as otel_inject

    otel_inject(carrier)


def current_span() -> Span | None:
    """The span of the RPC being served, or None when tracing is off."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    span = trace.get_current_span()
    return span if span.is_recording() else None


def log_ids() -> dict[str, str]:
    """trace_id and span_id of the current span, for log lines."""
    span = current_span()
    if span is None:
        return {}
    ctx = span.get_span_context()
    return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}
