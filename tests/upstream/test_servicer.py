"""The upstream servicer's translation of an inference GenerateRequest for a provider:
a prompt becomes one user message, a conversation keeps its roles, sampling parameters
carry over, and a grammar or a JSON Schema the provider cannot honour is refused."""

from __future__ import annotations

import pytest

from headrace.inference.v1 import inference_pb2
from headrace.services.runtime.errors import InvalidArgument
from headrace.services.upstream.servicer import ask_of
from headrace.services.upstream.settings import HostedModel
from headrace.types.v1 import types_pb2

PLAIN = HostedModel(name="plain", base_url="https://api.example.com/v1")
SCHEMA = HostedModel(
    name="schema", base_url="https://api.example.com/v1", supports_json_schema=True
)
GRAMMAR = HostedModel(name="gbnf", base_url="http://127.0.0.1:8000/v1", supports_grammar=True)


def test_a_prompt_is_one_user_message_with_the_sampling_parameters() -> None:
    request = inference_pb2.GenerateRequest(
        prompt="Hello",
        params=types_pb2.SamplingParams(max_tokens=12, temperature=0.2, seed=7, stop=["\n"]),
    )
    ask = ask_of(request, PLAIN, 256)
    assert ask.messages == [{"role": "user", "content": "Hello"}]
    assert ask.max_tokens == 12
    assert ask.options["temperature"] == pytest.approx(0.2)
    assert (ask.options["seed"], ask.options["stop"], ask.options["top_p"]) == (7, ["\n"], None)
    assert ask.options["response_format"] is None


def test_a_conversation_keeps_its_roles() -> None:
    request = inference_pb2.GenerateRequest(
        messages=[
            types_pb2.ChatMessage(role=types_pb2.ROLE_SYSTEM, content="Be brief."),
            types_pb2.ChatMessage(role=types_pb2.ROLE_USER, content="Hi"),
            types_pb2.ChatMessage(role=types_pb2.ROLE_ASSISTANT, content="Hello!"),
            types_pb2.ChatMessage(role=types_pb2.ROLE_USER, content="Bye"),
        ]
    )
    assert [m["role"] for m in ask_of(request, PLAIN, 256).messages] == [
        "system",
        "user",
        "assistant",
        "user",
    ]


def test_json_object_goes_to_any_provider_a_schema_only_to_one_that_honours_it() -> None:
    obj = inference_pb2.GenerateRequest(
        prompt="x", response_format=types_pb2.ResponseFormat(json_object=True)
    )
    assert ask_of(obj, PLAIN, 256).options["response_format"] == {"type": "json_object"}
    schema = inference_pb2.GenerateRequest(
        prompt="x", response_format=types_pb2.ResponseFormat(json_schema='{"type": "object"}')
    )
    with pytest.raises(InvalidArgument, match="cannot honour a JSON Schema"):
        ask_of(schema, PLAIN, 256)
    sent = ask_of(schema, SCHEMA, 256).options["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"] == {"type": "object"}


def test_a_raw_grammar_goes_only_to_a_provider_that_honours_one() -> None:
    request = inference_pb2.GenerateRequest(
        prompt="x", response_format=types_pb2.ResponseFormat(grammar='root ::= "a"')
    )
    with pytest.raises(InvalidArgument, match="cannot honour a raw grammar"):
        ask_of(request, PLAIN, 256)
    assert ask_of(request, GRAMMAR, 256).options["grammar"] == 'root ::= "a"'
