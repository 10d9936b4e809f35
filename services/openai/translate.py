"""OpenAI requests to RouterService requests, the router's stream back to OpenAI bodies
and chunks, and gRPC statuses to OpenAI errors. No HTTP here and no network: the
service (app.py) calls these between parsing a body and writing a response.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence

import grpc

from headrace.router.v1 import router_pb2
from headrace.services.runtime.openai_wire import (
    APIError,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatMessageOut,
    Completion,
    CompletionChoice,
    CompletionRequest,
    FinishReason,
    Headrace,
    Usage,
    bad_request,
    max_tokens_of,
    message_text,
    stop_list,
)
from headrace.types.v1 import types_pb2

ROLES = {
    "system": types_pb2.ROLE_SYSTEM,
    "developer": types_pb2.ROLE_SYSTEM,  # OpenAI's newer name for system instructions
    "user": types_pb2.ROLE_USER,
    "assistant": types_pb2.ROLE_ASSISTANT,
}

FINISH: dict[int, FinishReason] = {
    types_pb2.FINISH_REASON_STOP: "stop",
    types_pb2.FINISH_REASON_LENGTH: "length",
    types_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
    # A generation cut short (the router's side cancelled) ends like one that ran out.
    types_pb2.FINISH_REASON_CANCELLED: "length",
}


def resolve_model(name: str, aliases: Mapping[str, str]) -> str:
    """The served model a request names: an alias's target, or the name itself."""
    return aliases.get(name, name)


def _params(
    request: ChatCompletionRequest | CompletionRequest,
) -> types_pb2.SamplingParams:
    params = types_pb2.SamplingParams(stop=stop_list(request))
    if request.temperature is not None:
        params.temperature = request.temperature
    if request.top_p is not None:
        params.top_p = request.top_p
    max_tokens = max_tokens_of(request)
    if max_tokens is not None:
        params.max_tokens = max_tokens
    if request.seed is not None:
        params.seed = request.seed
    return params


def chat_to_generate(
    request: ChatCompletionRequest, aliases: Mapping[str, str]
) -> router_pb2.GenerateRequest:
    """A chat completion as a Generate call with `messages` and `response_format`."""
    messages = [
        types_pb2.ChatMessage(role=ROLES[m.role], content=message_text(m)) for m in request.messages
    ]
    out = router_pb2.GenerateRequest(
        model=resolve_model(request.model, aliases),
        params=_params(request),
        messages=messages,
    )
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        out.response_format.json_object = True
    elif fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None:
        out.response_format.json_schema = json.dumps(fmt.json_schema.schema_)
    return out


def completion_to_generate(
    request: CompletionRequest, aliases: Mapping[str, str]
) -> router_pb2.GenerateRequest:
    """A text completion as a Generate call with `prompt`."""
    prompt = request.prompt if isinstance(request.prompt, str) else request.prompt[0]
    return router_pb2.GenerateRequest(
        prompt=prompt, model=resolve_model(request.model, aliases), params=_params(request)
    )


# ---- the router's stream back ------------------------------------------------------


def extras(response: router_pb2.GenerateResponse) -> Headrace:
    return Headrace(
        request_id=response.request_id,
        task=response.task,
        arm=response.arm,
        cached=response.cached,
    )


def extra_headers(response: router_pb2.GenerateResponse) -> dict[str, str]:
    """The `x-headrace-*` response headers, from the stream's first message."""
    headers = {
        "x-headrace-request-id": response.request_id,
        "x-headrace-model": response.model,
        "x-headrace-provider": response.provider,  # a hosted model's provider
        "x-headrace-task": response.task,
        "x-headrace-arm": response.arm,
        "x-headrace-cached": "true" if response.cached else "false",
    }
    return {k: v for k, v in headers.items() if v}


def usage_of(response: router_pb2.GenerateResponse) -> Usage:
    u = response.usage
    return Usage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.total_tokens or u.prompt_tokens + u.completion_tokens,
    )


class ChunkWriter:
    """Turns the router's messages into OpenAI stream chunks for one request."""

    def __init__(self, chat: bool, completion_id: str, include_usage: bool) -> None:
        self.chat = chat
        self.id = completion_id
        self.include_usage = include_usage
        self.created = int(time.time())
        self.model = ""
        self._role_sent = False

    def chunks(
        self, response: router_pb2.GenerateResponse
    ) -> list[ChatCompletionChunk | Completion]:
        """The chunks for one router message: its text, then (on the last message) the
        finish reason with Headrace's extras, then the usage when asked for."""
        self.model = response.model or self.model
        out: list[ChatCompletionChunk | Completion] = []
        last = response.finish_reason != types_pb2.FINISH_REASON_UNSPECIFIED
        if response.text or (self.chat and not self._role_sent):
            out.append(self._text(response.text))
        if last:
            out.append(self._finish(FINISH.get(response.finish_reason, "stop"), extras(response)))
            if self.include_usage:
                out.append(self._usage(usage_of(response)))
        return out

    def _text(self, text: str) -> ChatCompletionChunk | Completion:
        if self.chat:
            role = None if self._role_sent else "assistant"
            self._role_sent = True
            return ChatCompletionChunk(
                id=self.id,
                created=self.created,
                model=self.model,
                choices=[ChatChunkChoice(delta=ChatDelta(role=role, content=text))],
            )
        return Completion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[CompletionChoice(text=text)],
        )

    def _finish(self, reason: FinishReason, extra: Headrace) -> ChatCompletionChunk | Completion:
        if self.chat:
            return ChatCompletionChunk(
                id=self.id,
                created=self.created,
                model=self.model,
                choices=[ChatChunkChoice(delta=ChatDelta(), finish_reason=reason)],
                headrace=extra,
            )
        return Completion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[CompletionChoice(text="", finish_reason=reason)],
            headrace=extra,
        )

    def _usage(self, usage: Usage) -> ChatCompletionChunk | Completion:
        # As OpenAI sends it: a last chunk with no choices and the whole request's usage.
        if self.chat:
            return ChatCompletionChunk(
                id=self.id, created=self.created, model=self.model, choices=[], usage=usage
            )
        return Completion(
            id=self.id, created=self.created, model=self.model, choices=[], usage=usage
        )


def whole_response(
    chat: bool, completion_id: str, responses: Sequence[router_pb2.GenerateResponse]
) -> ChatCompletion | Completion:
    """A non-streamed body from every message of the router's stream."""
    text = "".join(r.text for r in responses)
    last = responses[-1]
    model = next((r.model for r in responses if r.model), "")
    reason = FINISH.get(last.finish_reason, "stop")
    if chat:
        return ChatCompletion(
            id=completion_id,
            model=model,
            choices=[ChatChoice(message=ChatMessageOut(content=text), finish_reason=reason)],
            usage=usage_of(last),
            headrace=extras(last),
        )
    return Completion(
        id=completion_id,
        model=model,
        choices=[CompletionChoice(text=text, finish_reason=reason)],
        usage=usage_of(last),
        headrace=extras(last),
    )


# ---- errors --------------------------------------------------------------------------

_STATUS: dict[grpc.StatusCode, tuple[int, str, str | None]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error", None),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error", None),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error", None),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error", "invalid_api_key"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error", "content_blocked"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error", None),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error", "rate_limit_exceeded"),
    grpc.StatusCode.UNAVAILABLE: (503, "server_error", "no_backend"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout", "deadline_exceeded"),
    grpc.StatusCode.CANCELLED: (499, "cancelled", None),
}


def api_error(
    code: grpc.StatusCode, details: str, trailers: Sequence[tuple[str, str | bytes]] = ()
) -> APIError:
    """The OpenAI error for a RouterService status (its message kept: it is meant for
    people); unexpected statuses become a 500 that keeps the router's message too."""
    status, kind, error_code = _STATUS.get(code, (500, "server_error", None))
    param = None
    if code == grpc.StatusCode.NOT_FOUND and "model" in details:
        error_code, param = "model_not_found", "model"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "quota" in details.lower():
        error_code = "insufficient_quota"
    retry_after = None
    for key, value in trailers:
        if key == "retry-after":
            try:
                retry_after = float(value)
            except ValueError:
                pass
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after is None:
        retry_after = 1.0  # overload without a hint: a short wait is the useful advice
    return APIError(
        status,
        details or code.name,
        type=kind,
        code=error_code,
        param=param,
        retry_after_s=retry_after,
    )


def unknown_model(name: str, served: Sequence[str]) -> APIError:
    return APIError(
        404,
        f"The model {name!r} does not exist; available: {', '.join(served)}",
        type="not_found_error",
        code="model_not_found",
        param="model",
    )


__all__ = [
    "ChunkWriter",
    "api_error",
    "bad_request",
    "chat_to_generate",
    "completion_to_generate",
    "extra_headers",
    "resolve_model",
    "unknown_model",
    "whole_response",
]
