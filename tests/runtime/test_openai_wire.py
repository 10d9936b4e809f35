"""The OpenAI wire format: request checks name the offending field, neutral defaults
pass, bodies and SSE events round-trip."""

from __future__ import annotations

from typing import Any

import pytest

from headrace.services.runtime.openai_wire import (
    SSE_DONE,
    APIError,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatDelta,
    parse_chat_request,
    parse_completion_request,
    parse_sse,
    sse_event,
)

USER = [{"role": "user", "content": "hi"}]


def refused(body: dict[str, Any], chat: bool = True) -> APIError:
    with pytest.raises(APIError) as info:
        (parse_chat_request if chat else parse_completion_request)(body)
    assert info.value.status == 400
    return info.value


def test_the_defaults_sdks_and_langchain_send_are_accepted() -> None:
    request = parse_chat_request(
        {
            "model": "m",
            "messages": USER,
            "n": 1,
            "presence_penalty": 0,
            "frequency_penalty": 0.0,
            "logprobs": False,
            "top_logprobs": None,
            "logit_bias": {},
            "tools": [],
            "tool_choice": "none",
            "parallel_tool_calls": True,
            "stream": False,
            "store": False,
            "metadata": {"run": "7"},
            "user": "someone",
            "service_tier": "auto",
            "modalities": ["text"],
        }
    )
    assert request.messages[0].content == "hi"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"n": True}, "n"),
        ({"presence_penalty": 1}, "presence_penalty"),
        ({"frequency_penalty": -0.5}, "frequency_penalty"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"store": True}, "store"),
        ({"made_up": 1}, "made_up"),
        ({"stream_options": {"include_usage": True, "bogus": 1}}, "stream_options.bogus"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"max_tokens": 5, "max_completion_tokens": 6}, "max_completion_tokens"),
    ],
)
def test_a_value_that_would_change_the_result_is_refused_naming_the_field(
    extra: dict[str, Any], param: str
) -> None:
    error = refused({"model": "m", "messages": USER, **extra})
    assert error.param == param
    assert param.split(".")[0] in error.message
    assert error.body()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "tool", "content": "x", "tool_call_id": "1"}, "messages[1].tool_call_id"),
        ({"role": "tool", "content": "x"}, "messages[1].role"),
        ({"role": "user", "content": "x", "name": "bob"}, "messages[1].name"),
        ({"role": "assistant", "content": None, "tool_calls": [{}]}, "messages[1].tool_calls"),
        ({"role": "user", "content": None}, "messages[1].content"),
        ({"role": "user", "content": [{"type": "input_audio"}]}, "messages[1].content[0]"),
        ({"role": "user", "content": [{"type": "text"}]}, "messages[1].content[0]"),
    ],
)
def test_a_message_we_cannot_honour_is_refused_naming_it(
    message: dict[str, Any], param: str
) -> None:
    assert refused({"model": "m", "messages": [*USER, message]}).param == param


def test_completions_refuse_several_prompts_and_echo() -> None:
    assert refused({"model": "m", "prompt": ["a", "b"]}, chat=False).param == "prompt"
    assert refused({"model": "m", "prompt": "a", "echo": True}, chat=False).param == "echo"
    assert refused({"model": "m", "prompt": "a", "best_of": 2}, chat=False).param == "best_of"
    assert parse_completion_request({"model": "m", "prompt": ["a"], "echo": False}).prompt == ["a"]


def test_a_body_that_is_not_an_object_or_lacks_a_field_is_refused() -> None:
    assert refused([1, 2]).param is None  # type: ignore[arg-type]
    assert refused({"messages": USER}).param == "model"
    assert refused({"model": "m", "messages": [{"role": "user", "content": 5}]}).param == (
        "messages[0].content"
    )


def test_retry_after_is_whole_seconds_rounded_up_and_milliseconds() -> None:
    error = APIError(429, "slow down", type="rate_limit_error", retry_after_s=2.2)
    assert error.headers() == {"retry-after": "3", "retry-after-ms": "2200"}
    assert APIError(400, "x").headers() == {}


def test_sse_events_round_trip_and_leave_unset_extras_out() -> None:
    chunk = ChatCompletionChunk(
        id="c1",
        created=1,
        model="m",
        choices=[ChatChunkChoice(delta=ChatDelta(content="a\nb"))],
    )
    event = sse_event(chunk)
    assert event.startswith(b"data: {") and event.endswith(b"}\n\n") and event.count(b"\n") == 2
    assert b"headrace" not in event and b'"finish_reason":null' in event
    lines = (event + sse_event({"x": 1}) + SSE_DONE + sse_event({"after": 1})).decode().split("\n")
    payloads = parse_sse(lines)
    assert payloads[0]["choices"][0]["delta"]["content"] == "a\nb"
    assert payloads[1:] == [{"x": 1}], "nothing after [DONE]"
