"""One server interceptor for the cross-cutting concerns of every RPC.

For each call it: binds the request id (from `x-request-id` metadata, or a new
one) to the logging context; counts the call, its latency, in-flight and status
in Prometheus; and maps typed domain errors (runtime.errors) and upstream gRPC
errors to a status code with a message a person can act on. Servicers stay
thin: they translate protobuf to domain calls and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog

from headrace.services.runtime import metrics, tracing
from headrace.services.runtime.errors import HeadraceError
from headrace.services.runtime.logs import (
    REQUEST_ID_HEADER,
    get_logger,
    new_request_id,
    request_id_var,
)

log = get_logger(__name__)

# Upstream statuses whose details are our own services' messages and can be
# passed on as they are. Anything else becomes INTERNAL with a generic message.
_PASS_THROUGH = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.FAILED_PRECONDITION,
}


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


class _Call:
    """Bookkeeping for one RPC: request id, metrics, final status."""

    def __init__(self, method: str, kind: str, metadata: Any) -> None:
        self.service, self.method = _split(method)
        self.kind = kind
        rid = ""
        for key, value in metadata or ():
            if key == REQUEST_ID_HEADER and value:
                rid = str(value)[:128]
        self.request_id = rid or new_request_id()
        self.code = grpc.StatusCode.OK
        self.started = 0.0
        self.metadata = metadata
        self._traced: Any = None  # the server span's context manager, when tracing

    def begin(self) -> None:
        request_id_var.set(self.request_id)
        if tracing.enabled():
            self._traced = tracing.server_span(
                f"{self.service}/{self.method}",
                self.metadata,
                {
                    "rpc.system": "grpc",
                    "rpc.service": self.service,
                    "rpc.method": self.method,
                    "headrace.request_id": self.request_id,
                },
            )
            self.span = self._traced.__enter__()
        structlog.contextvars.bind_contextvars(rpc=f"{self.service}/{self.method}")
        labels = (self.service, self.method, self.kind)
        metrics.RPC_STARTED.labels(*labels).inc()
        metrics.RPC_IN_FLIGHT.labels(*labels).inc()
        self.started = time.perf_counter()

    def end(self, context: grpc.aio.ServicerContext) -> None:
        labels = (self.service, self.method, self.kind)
        metrics.RPC_IN_FLIGHT.labels(*labels).dec()
        metrics.RPC_LATENCY.labels(*labels).observe(time.perf_counter() - self.started)
        code = self.code
        try:
            ctx_code = context.code()
        except Exception:  # not every grpc version exposes code()
            ctx_code = None
        if code == grpc.StatusCode.OK and isinstance(ctx_code, grpc.StatusCode):
            code = ctx_code
        metrics.RPC_HANDLED.labels(*labels, code.name).inc()
        if self._traced is not None:
            self.span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code != grpc.StatusCode.OK:
                from opentelemetry.trace import Status, StatusCode

                self.span.set_status(Status(StatusCode.ERROR, code.name))
            self._traced.__exit__(None, None, None)
            self._traced = None

    @contextlib.asynccontextmanager
    async def observing(self, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        """The one wrapper around every kind of RPC: begin, map errors, end."""
        self.begin()
        try:
            yield
        except asyncio.CancelledError:
            self.code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # mapped to a status, never swallowed
            await self.fail(context, exc)
        finally:
            self.end(context)

    async def fail(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        """Turn an exception into a status on the call (context.abort raises)."""
        if isinstance(exc, HeadraceError):
            self.code = exc.code
            if exc.trailers:
                context.set_trailing_metadata(tuple(exc.trailers.items()))
            await context.abort(exc.code, exc.message)
        if isinstance(exc, grpc.aio.AioRpcError):
            code = exc.code()
            if code in _PASS_THROUGH:
                self.code = code
                trailers = tuple(
                    (k, v)
                    for k, v in (exc.trailing_metadata() or ())
                    if k in ("retry-after", "x-ratelimit-reset")
                )
                if trailers:
                    context.set_trailing_metadata(trailers)
                await context.abort(code, exc.details() or code.name)
        self.code = grpc.StatusCode.INTERNAL
        log.error("rpc_failed", exc_info=exc)
        await context.abort(
            grpc.StatusCode.INTERNAL,
            f"internal error; quote request id {self.request_id} when reporting it",
        )


# Each kind of RPC: the handler attribute holding its behaviour, its metric label,
# the factory that wraps a behaviour of that kind, and whether it answers a stream.
_KINDS = (
    ("unary_unary", "unary", grpc.unary_unary_rpc_method_handler, False),
    ("stream_unary", "client_stream", grpc.stream_unary_rpc_method_handler, False),
    ("unary_stream", "server_stream", grpc.unary_stream_rpc_method_handler, True),
    ("stream_stream", "bidi_stream", grpc.stream_stream_rpc_method_handler, True),
)


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Request id, metrics and error mapping for every RPC of a server."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        metadata = handler_call_details.invocation_metadata
        attribute, kind, factory, streams = next(k for k in _KINDS if getattr(handler, k[0]))
        behavior = getattr(handler, attribute)

        async def answer(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with _Call(method, kind, metadata).observing(context):
                return await behavior(request, context)

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with _Call(method, kind, metadata).observing(context):
                async for response in behavior(request, context):
                    yield response

        return factory(
            stream if streams else answer,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def outgoing_metadata(*extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    """Metadata for a call to another service: carries the current request id."""
    rid = request_id_var.get()
    metadata = ((REQUEST_ID_HEADER, rid), *extra) if rid else tuple(extra)
    if tracing.enabled():
        carrier: dict[str, str] = {}
        tracing.inject(carrier)  # the current span becomes the callee's parent
        metadata = (*metadata, *carrier.items())
    return metadata
