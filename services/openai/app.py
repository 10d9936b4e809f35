"""The HTTP surface: Starlette routes that parse an OpenAI request, call RouterService
and write the answer as JSON or server-sent events. Translation lives in translate.py,
the wire format in runtime/openai_wire.py; this module only moves bytes and counts.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from headrace.router.v1 import router_pb2
from headrace.services.openai import metrics
from headrace.services.openai.router_client import Generation, RouterClient
from headrace.services.openai.settings import OpenAISettings
from headrace.services.openai.translate import (
    ChunkWriter,
    chat_to_generate,
    completion_to_generate,
    extra_headers,
    unknown_model,
    whole_response,
)
from headrace.services.runtime.logs import REQUEST_ID_HEADER, get_logger, new_request_id
from headrace.services.runtime.logs import request_id_var as _request_id_var
from headrace.services.runtime.openai_wire import (
    SSE_DONE,
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    ModelList,
    bad_request,
    dump,
    parse_chat_request,
    parse_completion_request,
    sse_event,
)

log = get_logger(__name__)

_T = TypeVar("_T")

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _error_response(error: APIError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        error.body(), status_code=error.status, headers={**(headers or {}), **error.headers()}
    )


async def _collect(generation: Generation) -> list[router_pb2.GenerateResponse]:
    return [response async for response in generation.rest()]


async def _unless_disconnected(request: Request, work: Awaitable[_T]) -> _T | None:
    """`work`'s result, or None once the client has gone (then `work` is cancelled): a
    client that gives up on a whole (non-streamed) answer frees its slot too. The body
    has been read, so the next ASGI message can only be the disconnect."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(request.receive())
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        return None
    finally:
        task.cancel()
        gone.cancel()


class Exchange:
    """One generation request's bookkeeping: in-flight while open, then counted once
    with its status and duration, however it ends."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.started = time.perf_counter()
        self.settled = False
        metrics.IN_FLIGHT.labels(endpoint).inc()

    def first_text(self) -> None:
        metrics.FIRST_TEXT.labels(self.endpoint).observe(time.perf_counter() - self.started)

    def settle(self, status: str) -> None:
        if self.settled:
            return
        self.settled = True
        metrics.IN_FLIGHT.labels(self.endpoint).dec()
        metrics.REQUESTS.labels(self.endpoint, status).inc()
        metrics.SECONDS.labels(self.endpoint).observe(time.perf_counter() - self.started)
        if status == "499":
            metrics.DISCONNECTS.labels(self.endpoint).inc()


class EventStream(StreamingResponse):
    """The SSE response of one generation. Starlette cancels the body when the client
    disconnects; whatever ends it, the router call is cancelled (which frees the model's
    slot, as a gRPC cancellation does) and the exchange is settled, even when the client
    left before the first byte was written."""

    def __init__(
        self,
        exchange: Exchange,
        generation: Generation,
        first: router_pb2.GenerateResponse,
        writer: ChunkWriter,
        headers: dict[str, str],
    ) -> None:
        self.exchange = exchange
        self.generation = generation
        self.status = "499"  # until the stream ends by itself
        super().__init__(
            self._events(first, writer),
            media_type="text/event-stream",
            headers={**headers, **SSE_HEADERS},
        )

    async def _events(
        self, first: router_pb2.GenerateResponse, writer: ChunkWriter
    ) -> AsyncIterator[bytes]:
        try:
            out = b"".join(sse_event(chunk) for chunk in writer.chunks(first))
            self.exchange.first_text()
            yield out
            if not first.finish_reason:
                async for response in self.generation.rest():
                    yield b"".join(sse_event(chunk) for chunk in writer.chunks(response))
            self.status = "200"
            yield SSE_DONE
        except APIError as error:
            # Headers are gone: the error travels as an event, which the SDKs raise.
            self.status = str(error.status)
            yield sse_event(error.body())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.generation.cancel()
            self.exchange.settle(self.status)


class FrontDoor:
    """The OpenAI API over one RouterClient."""

    def __init__(self, router: RouterClient, settings: OpenAISettings) -> None:
        self.router = router
        self.settings = settings
        self.draining = False

    # ---- request plumbing ------------------------------------------------------------

    def _timeout(self, request: Request) -> float:
        timeout = self.settings.request_timeout_seconds
        hinted = request.headers.get("x-stainless-timeout")  # the OpenAI SDKs' own timeout
        try:
            return min(timeout, float(hinted)) if hinted else timeout
        except ValueError:
            return timeout

    async def _body(self, request: Request) -> object:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > self.settings.max_body_bytes:
            raise APIError(413, f"request body over {self.settings.max_body_bytes} bytes")
        raw = await request.body()
        if len(raw) > self.settings.max_body_bytes:
            raise APIError(413, f"request body over {self.settings.max_body_bytes} bytes")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"the request body is not valid JSON: {exc}") from None

    def _ids(self, request: Request) -> tuple[str, dict[str, str]]:
        """The request id (Envoy's x-request-id, or a new one) and the headers naming it."""
        rid = (request.headers.get(REQUEST_ID_HEADER) or new_request_id())[:128]
        _request_id_var.set(rid)
        return rid, {REQUEST_ID_HEADER: rid}

    # ---- endpoints --------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, chat=True)

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, chat=False)

    def _parse(
        self, body: object, chat: bool
    ) -> tuple[ChatCompletionRequest | CompletionRequest, router_pb2.GenerateRequest]:
        """The checked OpenAI request and the Generate call it becomes."""
        aliases = self.settings.model_aliases
        if chat:
            parsed_chat = parse_chat_request(body)
            return parsed_chat, chat_to_generate(parsed_chat, aliases)
        parsed = parse_completion_request(body)
        return parsed, completion_to_generate(parsed, aliases)

    async def _generate(self, request: Request, *, chat: bool) -> Response:
        exchange = Exchange("chat.completions" if chat else "completions")
        rid, headers = self._ids(request)
        try:
            parsed, call = self._parse(await self._body(request), chat)
            generation = self.router.generate(
                call, request.headers.get("authorization", ""), rid, self._timeout(request)
            )
            try:
                first = await generation.first()
            except BaseException:
                generation.cancel()
                raise
            headers.update(extra_headers(first))
            completion_id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
            if parsed.stream:
                include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
                writer = ChunkWriter(chat, completion_id, include_usage)
                return EventStream(exchange, generation, first, writer, headers)
            try:
                responses = [first]
                if not first.finish_reason:
                    rest = await _unless_disconnected(request, _collect(generation))
                    if rest is None:
                        exchange.settle("499")
                        return Response(status_code=499)  # nobody is there to read it
                    responses += rest
            finally:
                generation.cancel()  # a no-op once the stream has ended
            exchange.first_text()
            body = dump(whole_response(chat, completion_id, responses))
            exchange.settle("200")
            return Response(body, media_type="application/json", headers=headers)
        except APIError as error:
            exchange.settle(str(error.status))
            return _error_response(error, headers)
        except BaseException:
            exchange.settle("500")
            raise

    async def _served(self, request: Request, rid: str) -> list[router_pb2.Model]:
        return await self.router.models(
            request.headers.get("authorization", ""), rid, self._timeout(request)
        )

    def _cards(self, models: list[router_pb2.Model]) -> list[ModelCard]:
        names = [m.name for m in models]
        cards = [ModelCard(id=name, owned_by=self.settings.owned_by) for name in names]
        # The registry's aliases (the router serves them as their model), then this
        # front door's own.
        cards += [
            ModelCard(id=alias, owned_by=self.settings.owned_by)
            for m in models
            for alias in m.aliases
        ]
        names += [alias for m in models for alias in m.aliases]
        cards += [
            ModelCard(id=alias, owned_by=self.settings.owned_by)
            for alias, target in sorted(self.settings.model_aliases.items())
            if target in names and alias not in names
        ]
        return cards

    async def list_models(self, request: Request) -> Response:
        return await self._counted(request, self._list_models)

    async def _list_models(self, request: Request, rid: str) -> Response:
        cards = self._cards(await self._served(request, rid))
        return JSONResponse(ModelList(data=cards).model_dump(mode="json"))

    async def get_model(self, request: Request) -> Response:
        return await self._counted(request, self._get_model)

    async def _get_model(self, request: Request, rid: str) -> Response:
        wanted = request.path_params["model"]
        cards = self._cards(await self._served(request, rid))
        for card in cards:
            if card.id == wanted:
                return JSONResponse(card.model_dump(mode="json"))
        raise unknown_model(wanted, [c.id for c in cards])

    async def _counted(
        self, request: Request, handler: Callable[[Request, str], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        rid, headers = self._ids(request)
        metrics.IN_FLIGHT.labels("models").inc()
        try:
            response = await handler(request, rid)
            response.headers.update(headers)
        except APIError as error:
            response = _error_response(error, headers)
        finally:
            metrics.IN_FLIGHT.labels("models").dec()
        metrics.REQUESTS.labels("models", str(response.status_code)).inc()
        metrics.SECONDS.labels("models").observe(time.perf_counter() - started)
        return response

    async def health(self, request: Request) -> Response:
        """Envoy's and the launcher's health check: 503 once draining."""
        if self.draining:
            return PlainTextResponse("draining", status_code=503)
        return PlainTextResponse("ok")

    async def not_found(self, request: Request, exc: Exception) -> Response:
        return _error_response(
            APIError(
                404,
                f"no such endpoint: {request.method} {request.url.path}; see docs/openai.md",
                code="unknown_url",
            )
        )

    async def not_allowed(self, request: Request, exc: Exception) -> Response:
        return _error_response(
            APIError(405, f"{request.method} is not allowed on {request.url.path}")
        )

    async def crashed(self, request: Request, exc: Exception) -> Response:
        rid = _request_id_var.get()
        log.error("request_failed", exc_info=exc)
        return _error_response(
            APIError(
                500,
                f"internal error; quote request id {rid} when reporting it",
                type="server_error",
            )
        )


def make_app(door: FrontDoor) -> Starlette:
    """The ASGI application."""
    return Starlette(
        routes=[
            Route("/v1/chat/completions", door.chat_completions, methods=["POST"]),
            Route("/v1/completions", door.completions, methods=["POST"]),
            Route("/v1/models", door.list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", door.get_model, methods=["GET"]),
            Route("/healthz", door.health, methods=["GET"]),
        ],
        exception_handlers={404: door.not_found, 405: door.not_allowed, 500: door.crashed},
    )
