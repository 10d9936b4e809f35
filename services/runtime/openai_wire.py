"""The OpenAI HTTP API's wire format: request, response, chunk and error bodies, and
server-sent-event framing. Pure data (pydantic and bytes), no HTTP server and no gRPC,
so that any service can speak it: the OpenAI-compatible front door (services/openai)
serves it, and a client of hosted OpenAI-compatible providers can parse it.

Requests are validated strictly, the way the issue asks: every field the API defines is
either supported, accepted only with the neutral value SDKs send by default (`n: 1`,
`presence_penalty: 0`, ...), or refused with a 400 naming it. A field the API does not
define at all is refused too, as OpenAI itself does ("Unrecognized request argument").
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# ---- errors -------------------------------------------------------------------------


class APIError(Exception):
    """An error as OpenAI reports it: HTTP status and `{"error": {...}}` body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, Any]:
        """The JSON body: `{"error": {"message", "type", "code", "param"}}`."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
            }
        }

    def headers(self) -> dict[str, str]:
        """`retry-after` (whole seconds, rounded up) and `retry-after-ms` when known."""
        if self.retry_after_s is None:
            return {}
        seconds = max(self.retry_after_s, 0.0)
        return {
            "retry-after": str(math.ceil(seconds)),
            "retry-after-ms": str(round(seconds * 1000)),
        }


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 invalid_request_error naming the offending parameter."""
    return APIError(400, message, param=param, code=code)


# ---- requests -----------------------------------------------------------------------

# Fields the API defines that Headrace does not implement, with the predicate a value
# must meet to change nothing (then it is accepted); any other value is a 400 naming
# the field. A value of None (JSON null) always means "not set".


def _is(*neutral: object) -> Callable[[Any], bool]:
    """Accepts null and values equal to one of `neutral` (a bool is not a number here)."""

    def accepts(value: Any) -> bool:
        return value is None or any(
            value == n and isinstance(value, bool) == isinstance(n, bool) for n in neutral
        )

    return accepts


def _empty(value: Any) -> bool:
    return value is None or value == [] or value == {}


def _any(_value: Any) -> bool:
    return True


COMMON_NEUTRAL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (_is(1), "only n=1 is supported"),
    "presence_penalty": (_is(0), "only presence_penalty=0 is supported"),
    "frequency_penalty": (_is(0), "only frequency_penalty=0 is supported"),
    "logit_bias": (_empty, "logit_bias is not supported"),
    "logprobs": (_is(False), "logprobs are not supported"),
    # No effect on the text: metadata and identifiers for the provider's own books.
    "metadata": (_any, ""),
    "store": (_is(False), "stored completions are not supported"),
    "service_tier": (_is("auto", "default"), "only service_tier 'auto' is supported"),
    "safety_identifier": (_any, ""),
    "prompt_cache_key": (_any, ""),
}

CHAT_NEUTRAL: dict[str, tuple[Callable[[Any], bool], str]] = {
    **COMMON_NEUTRAL,
    "top_logprobs": (_is(0), "top_logprobs is not supported"),
    "tools": (_empty, "tools (function calling) are not supported"),
    "tool_choice": (_is("none"), "tool_choice is not supported"),
    "parallel_tool_calls": (_any, ""),  # meaningless without tools, which are refused
    "functions": (_empty, "functions (function calling) are not supported"),
    "function_call": (_is("none"), "function_call is not supported"),
    "modalities": (lambda v: v is None or v == ["text"], "only the text modality is supported"),
    "audio": (_empty, "audio output is not supported"),
    "prediction": (_empty, "predicted outputs are not supported"),
    "reasoning_effort": (_empty, "reasoning_effort is not supported"),
    "verbosity": (_empty, "verbosity is not supported"),
    "web_search_options": (_empty, "web search is not supported"),
}

COMPLETION_NEUTRAL: dict[str, tuple[Callable[[Any], bool], str]] = {
    **COMMON_NEUTRAL,
    "logprobs": (lambda v: v is None or v is False or v == 0, "logprobs are not supported"),
    "best_of": (_is(1), "only best_of=1 is supported"),
    "echo": (_is(False), "echo is not supported"),
    "suffix": (lambda v: v is None or v == "", "suffix (insertion) is not supported"),
}


_M = TypeVar("_M", bound=BaseModel)


class _Strict(BaseModel):
    # Unknown keys are kept so that the request check can name them (never ignored).
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessageIn(_Strict):
    """One message of a chat request, as sent."""

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[Any] | None = None
    function_call: Any = None


class JSONSchemaFormat(_Strict):
    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    description: str | None = None
    strict: bool | None = None


class ResponseFormatIn(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class _SamplingRequest(_Strict):
    model: str
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None


class ChatCompletionRequest(_SamplingRequest):
    """POST /v1/chat/completions."""

    messages: list[ChatMessageIn]
    max_completion_tokens: int | None = None
    response_format: ResponseFormatIn | None = None


class CompletionRequest(_SamplingRequest):
    """POST /v1/completions."""

    prompt: str | list[str]


def _is_union_tag(part: int | str) -> bool:
    # pydantic names the union member it tried ("str", "list[...]", "StreamOptions") in
    # an error's location; those are not parts of the request's path.
    return isinstance(part, str) and (part[:1].isupper() or "[" in part or part == "str")


def _loc(loc: tuple[int | str, ...]) -> str:
    """An error location as OpenAI writes a param: `messages[0].content`."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not _is_union_tag(part):
            text += f".{part}" if text else part
    return text


def _validated(model: type[_M], body: Any) -> _M:
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = _loc(first["loc"])
        raise bad_request(f"{param}: {first['msg']}", param=param) from None


def _check_extras(
    obj: BaseModel, neutral: dict[str, tuple[Callable[[Any], bool], str]], prefix: str = ""
) -> None:
    for key, value in (obj.model_extra or {}).items():
        param = f"{prefix}{key}"
        if key not in neutral:
            raise bad_request(
                f"Unrecognized request argument supplied: {param}",
                param=param,
                code="unsupported_parameter",
            )
        accepts, reason = neutral[key]
        if not accepts(value):
            raise bad_request(
                f"{param}={json.dumps(value)[:80]} is not supported: {reason}",
                param=param,
                code="unsupported_value",
            )


def _check_no_extras(obj: BaseModel, prefix: str) -> None:
    _check_extras(obj, {}, prefix)


def parse_chat_request(body: Any) -> ChatCompletionRequest:
    """A chat request, validated: APIError(400) naming the first offending field."""
    request = _validated(ChatCompletionRequest, body)
    _check_extras(request, CHAT_NEUTRAL)
    _check_sampling(request)
    if request.stream_options is not None:
        _check_no_extras(request.stream_options, "stream_options.")
    if (
        request.max_tokens is not None
        and request.max_completion_tokens is not None
        and request.max_tokens != request.max_completion_tokens
    ):
        raise bad_request(
            "max_tokens and max_completion_tokens differ; send one of them",
            param="max_completion_tokens",
        )
    if not request.messages:
        raise bad_request("messages must not be empty", param="messages")
    for i, message in enumerate(request.messages):
        _check_message(i, message)
    if request.response_format is not None:
        _check_no_extras(request.response_format, "response_format.")
        if request.response_format.type == "json_schema":
            schema = request.response_format.json_schema
            if schema is None:
                raise bad_request(
                    "response_format.json_schema is required with type json_schema",
                    param="response_format.json_schema",
                )
            _check_no_extras(schema, "response_format.json_schema.")
    return request


def parse_completion_request(body: Any) -> CompletionRequest:
    """A completion request, validated: APIError(400) naming the first offending field."""
    request = _validated(CompletionRequest, body)
    _check_extras(request, COMPLETION_NEUTRAL)
    _check_sampling(request)
    if request.stream_options is not None:
        _check_no_extras(request.stream_options, "stream_options.")
    if isinstance(request.prompt, list) and len(request.prompt) != 1:
        raise bad_request(
            "prompt: one prompt per request (a list of several is not supported)", param="prompt"
        )
    return request


def _check_sampling(request: _SamplingRequest) -> None:
    stop = request.stop
    if isinstance(stop, list) and len(stop) > 4:
        raise bad_request("stop takes at most 4 sequences", param="stop")


ROLES = ("system", "developer", "user", "assistant")


def _check_message(i: int, message: ChatMessageIn) -> None:
    at = f"messages[{i}]"
    _check_no_extras(message, f"{at}.")
    if message.role not in ROLES:
        raise bad_request(
            f"{at}.role: {message.role!r} is not supported; roles: {', '.join(ROLES)}"
            + (" (tool calling is not supported)" if message.role in ("tool", "function") else ""),
            param=f"{at}.role",
        )
    if message.tool_calls:
        raise bad_request(f"{at}.tool_calls: tool calling is not supported", f"{at}.tool_calls")
    if message.function_call is not None:
        raise bad_request(f"{at}.function_call: not supported", f"{at}.function_call")
    if message.name:
        raise bad_request(f"{at}.name: participant names are not supported", f"{at}.name")
    if message.content is None:
        raise bad_request(f"{at}.content is required", f"{at}.content")
    if isinstance(message.content, list):
        for j, part in enumerate(message.content):
            where = f"{at}.content[{j}]"
            if part.get("type") != "text":
                raise bad_request(
                    f"{where}: content parts of type {part.get('type')!r} are not supported "
                    "(only text)",
                    param=where,
                )
            try:
                _check_no_extras(TextPart.model_validate(part), f"{where}.")
            except ValidationError as exc:
                raise bad_request(f"{where}: {exc.errors()[0]['msg']}", param=where) from None


def message_text(message: ChatMessageIn) -> str:
    """A message's content as one string (text parts joined as they come)."""
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content or ())


def max_tokens_of(request: _SamplingRequest) -> int | None:
    """max_completion_tokens, else max_tokens (chat requests may send either)."""
    return getattr(request, "max_completion_tokens", None) or request.max_tokens


def stop_list(request: _SamplingRequest) -> list[str]:
    stop = request.stop
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


# ---- responses ----------------------------------------------------------------------

FinishReason = Literal["stop", "length", "content_filter"] | None


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Headrace(BaseModel):
    """Headrace's extras, in a field the SDKs ignore (also in `x-headrace-*` headers)."""

    request_id: str = ""
    task: str = ""
    arm: str = ""
    cached: bool = False


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: ChatMessageOut
    finish_reason: FinishReason = None
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    headrace: Headrace | None = None


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: ChatDelta
    finish_reason: FinishReason = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    headrace: Headrace | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: FinishReason = None
    logprobs: None = None


class Completion(BaseModel):
    """A text completion, and (object "text_completion" too) each streamed chunk."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    headrace: Headrace | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "headrace"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# ---- server-sent events -------------------------------------------------------------

SSE_DONE = b"data: [DONE]\n\n"


# Optional fields left out of a body when unset (OpenAI writes `finish_reason` and
# `usage` as null, but not these).
OMIT_WHEN_NONE = ("headrace", "system_fingerprint")


def dump(payload: BaseModel) -> str:
    """A response body or chunk as compact JSON."""
    omit = {name for name in OMIT_WHEN_NONE if getattr(payload, name, "") is None}
    return payload.model_dump_json(exclude=omit or None)


def sse_event(payload: BaseModel | dict[str, Any]) -> bytes:
    """One `data: <json>` event (JSON has no raw newlines, so one line is enough)."""
    data = (
        dump(payload)
        if isinstance(payload, BaseModel)
        else json.dumps(payload, separators=(",", ":"))
    )
    return b"data: " + data.encode() + b"\n\n"


def parse_sse(lines: list[str]) -> list[dict[str, Any]]:
    """The JSON payloads of a stream's `data:` lines, up to `[DONE]` (for clients and
    tests): the inverse of sse_event."""
    out = []
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        out.append(json.loads(data))
    return out


# ---- a client of OpenAI-compatible providers ----------------------------------------
# The upstream service (services/upstream) calls hosted providers with the same wire
# format the front door serves: a chat request body out, chunks and errors back.


def chat_request_body(
    model: str,
    messages: list[dict[str, str]],
    *,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: list[str] | None = None,
    response_format: dict[str, Any] | None = None,
    grammar: str | None = None,
) -> dict[str, Any]:
    """A streamed /v1/chat/completions request body asking for usage in the last chunk.
    Unset parameters are left out (providers differ in what they accept). `grammar` is
    llama.cpp's server extension (a GBNF grammar), for providers that honour it."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    optional = {
        "max_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "stop": stop or None,
        "response_format": response_format,
        "grammar": grammar,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


SSE_END = "[DONE]"


def sse_data(line: str) -> str | None:
    """The payload of one server-sent-event line when it is a `data:` line, else None
    (comments, `event:`/`id:` fields and blank separators carry no payload here)."""
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


class ChunkPiece(BaseModel):
    """What one streamed chat chunk carries, whichever optional parts a provider sends."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None


def parse_chat_chunk(data: str) -> ChunkPiece:
    """One `data:` payload of a streamed chat completion; ValueError when it is not a
    chunk (an error object mid-stream, or not JSON)."""
    try:
        payload = json.loads(data)
    except ValueError:
        raise ValueError("a stream event that is not JSON") from None
    if not isinstance(payload, dict):
        raise ValueError("a stream event that is not a JSON object")
    if "error" in payload:
        raise ValueError(error_message(payload))
    piece = ChunkPiece()
    usage = payload.get("usage")
    if isinstance(usage, dict):
        piece.usage = Usage.model_validate(
            {k: usage.get(k) or 0 for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
        )
    for choice in payload.get("choices") or ():
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta") or {}
        piece.text += str(delta.get("content") or "")
        piece.finish_reason = choice.get("finish_reason") or piece.finish_reason
    return piece


def error_message(body: Any) -> str:
    """The message of an OpenAI error body (`{"error": {"message"}}`, or a bare string),
    for logs and errors: callers must scrub it, as it may echo what was sent."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("code") or "")[:500]
        return str(error)[:500]
    return str(body)[:500]
