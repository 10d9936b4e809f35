"""The router's side of conversations and structured output: validation naming the
message, the conversation checked as messages and forwarded redacted with the response
format, inference's refusals passed through, the cache key and the audit line."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata

from headrace.router.v1 import router_pb2
from headrace.services.router.backends import Piece, ResponseKey, Usage
from headrace.services.router.content import Content, Turn, content_of, validate
from headrace.services.router.orchestrator import Ask
from headrace.services.router.servicer import RouterServicer
from headrace.services.runtime.errors import InvalidArgument
from headrace.types.v1 import types_pb2
from tests.router.fakes import Fakes, answer, audit_lines

SYSTEM, USER, ASSISTANT = types_pb2.ROLE_SYSTEM, types_pb2.ROLE_USER, types_pb2.ROLE_ASSISTANT
GREEDY = types_pb2.SamplingParams(temperature=0.0)
SCHEMA = types_pb2.ResponseFormat(json_schema='{"type": "object"}')


def msg(role: int, content: str) -> types_pb2.ChatMessage:
    return types_pb2.ChatMessage(role=role, content=content)


def chat(*turns: tuple[int, str], fmt: types_pb2.ResponseFormat | None = None) -> Content:
    content = content_of("", [msg(r, c) for r, c in turns], fmt)
    validate(content, 32 * 1024)
    return content


# ---- validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "messages", "words"),
    [
        ("hi", [msg(USER, "hi")], ["either prompt or messages"]),
        ("", [], ["empty", "prompt", "messages"]),
        ("", [msg(USER, "a"), msg(types_pb2.ROLE_UNSPECIFIED, "b")], ["messages[1]", "role"]),
        ("", [msg(USER, "a"), msg(7, "b"), msg(USER, "c")], ["messages[1]", "role 7"]),
        ("", [msg(USER, "a"), msg(SYSTEM, "late"), msg(USER, "c")], ["messages[1]", "system"]),
        ("", [msg(SYSTEM, "rules")], ["messages[0]", "end with a user turn"]),
        ("", [msg(USER, "a"), msg(ASSISTANT, "b")], ["messages[1]", "assistant"]),
        ("", [msg(SYSTEM, "s"), msg(USER, "  "), msg(USER, "c")], ["messages[1]", "empty"]),
        ("", [msg(USER, "a"), msg(ASSISTANT, ""), msg(USER, "c")], ["messages[1]", "empty"]),
    ],
)
def test_a_malformed_request_is_invalid_argument_naming_the_message(
    prompt: str, messages: list[types_pb2.ChatMessage], words: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate(content_of(prompt, messages, None), 32 * 1024)
    for word in words:
        assert word in info.value.message, info.value.message


def test_a_conversation_over_the_size_limit_is_refused() -> None:
    messages = [msg(USER, "x" * 600), msg(ASSISTANT, "y" * 600), msg(USER, "z")]
    with pytest.raises(InvalidArgument, match="1201 bytes; the limit is 1000") as info:
        validate(content_of("", messages, None), 1000)
    assert "messages[0], 600 bytes" in info.value.message


def test_a_well_formed_conversation_is_accepted_as_turns() -> None:
    content = chat((SYSTEM, "be brief"), (USER, "hi"), (ASSISTANT, "hello"), (USER, "bye"))
    assert content.is_conversation and len(content.turns) == 4
    assert content.routing_text == "bye" and content.size_bytes == len("be briefhihellobye")


async def test_a_bad_conversation_is_refused_before_any_backend_and_audited(
    tmp_path: Path,
) -> None:
    fakes = Fakes()
    router = fakes.orchestrator(tmp_path)
    ask = RouterServicer.ask_from(router_pb2.GenerateRequest(messages=[msg(ASSISTANT, "me")]))
    with pytest.raises(InvalidArgument, match=r"messages\[0\]"):
        [r async for r in router.generate(ask, "credential", remaining=5.0)]
    assert fakes.auth.asked == [] and fakes.sanitizer.checked == []
    [line] = audit_lines(router)
    assert line["status"] == "INVALID_ARGUMENT" and line["subject"] is None
    ask = RouterServicer.ask_from(
        router_pb2.GenerateRequest(messages=[msg(USER, "hi")], response_format=SCHEMA)
    )
    assert ask.content.turns == (Turn(USER, "hi"),) and ask.content.constrained


# ---- the pipeline -------------------------------------------------------------------


async def run(fakes: Fakes, tmp_path: Path, content: Content, **ask: object) -> list[object]:
    router = fakes.orchestrator(tmp_path)
    out = [
        r
        async for r in router.generate(Ask(content, **ask), "credential", remaining=5.0)  # type: ignore[arg-type]
    ]
    fakes.router = router  # type: ignore[attr-defined]
    return out


async def test_the_conversation_is_checked_as_messages_and_forwarded_redacted(
    tmp_path: Path,
) -> None:
    fakes = Fakes()
    fakes.sanitizer.redact_map = {"my key is sk-123": "my key is [SECRET]"}
    content = chat(
        (SYSTEM, "my key is sk-123"), (USER, "hi"), (ASSISTANT, "hello"), (USER, "go"), fmt=SCHEMA
    )
    out = await run(fakes, tmp_path, content, params=GREEDY)
    [(checked, tier)] = fakes.sanitizer.checked
    assert checked.turns == content.turns and tier == "free"
    [asked] = fakes.inference.asked
    sent: Content = asked["content"]  # type: ignore[assignment]
    assert [t.content for t in sent.turns] == ["my key is [SECRET]", "hi", "hello", "go"]
    assert sent.response_format == SCHEMA
    assert "".join(r.text for r in out) == "fresh"  # type: ignore[attr-defined]
    # Nothing unredacted reaches the cache either.
    [key] = fakes.cache.lookups
    assert all("sk-123" not in t.content for t in key.content.turns)


async def test_auth_is_asked_to_reserve_for_every_turn(tmp_path: Path) -> None:
    fakes = Fakes()
    await run(fakes, tmp_path, chat((USER, "a" * 40), (ASSISTANT, "b" * 40), (USER, "c" * 20)))
    [asked] = fakes.auth.asked
    assert asked["content_bytes"] == 100


def code_error(code: grpc.StatusCode, details: str) -> AioRpcError:
    return AioRpcError(code, Metadata(), Metadata(), details=details)


@pytest.mark.parametrize(
    ("code", "details"),
    [
        (
            grpc.StatusCode.FAILED_PRECONDITION,
            "model 'base' has no chat template; set chat_template in its registry entry",
        ),
        (grpc.StatusCode.INVALID_ARGUMENT, "unsupported JSON Schema keyword 'minimum' at /age"),
    ],
)
async def test_inference_refusals_pass_through_with_their_message_and_no_fallback(
    tmp_path: Path, code: grpc.StatusCode, details: str
) -> None:
    fakes = Fakes()
    fakes.inference.models.append(fakes.inference.models[0].__class__("second"))
    fakes.inference.answers["served"] = code_error(code, details)
    router = fakes.orchestrator(
        tmp_path, tasks={"t": {"models": ["served"]}}, task_rules=[], fallback_models=["second"]
    )
    ask = Ask(chat((USER, "hi"), fmt=SCHEMA), task="t")
    with pytest.raises(AioRpcError) as info:
        [r async for r in router.generate(ask, "credential", remaining=5.0)]
    assert info.value.code() == code and info.value.details() == details
    assert [a["model"] for a in fakes.inference.asked] == ["served"], "not a reason to fall back"
    [line] = audit_lines(router)
    assert line["status"] == code.name


def key_of(content: Content, params: types_pb2.SamplingParams = GREEDY) -> str:
    from headrace.services.router.backends import ModelInfo

    key = ResponseKey(ModelInfo("m"), content, params, subject="", task="")
    return key.to_proto().content_digest


def test_the_cache_key_is_the_canonical_conversation_and_format() -> None:
    base = chat((SYSTEM, "s"), (USER, "hi"))
    assert key_of(base) == key_of(chat((SYSTEM, "s"), (USER, "hi")))
    assert key_of(base) != key_of(chat((USER, "s"), (USER, "hi"))), "roles count"
    assert key_of(base) != key_of(chat((SYSTEM, "s"), (USER, "hi"), fmt=SCHEMA))
    assert key_of(chat((USER, "hi"), fmt=SCHEMA)) != key_of(
        chat((USER, "hi"), fmt=types_pb2.ResponseFormat(json_object=True))
    )
    assert key_of(chat((USER, "hi"))) != key_of(Content(prompt="hi")), "a chat is not a prompt"
    from headrace.services.router.backends import ModelInfo

    proto = ResponseKey(ModelInfo("m"), base, GREEDY, subject="", task="").to_proto()
    assert proto.prompt == "", "no semantic matching across conversations"
    assert proto.params == GREEDY, "parameters stay in the key"


async def test_the_audit_line_counts_turns_and_summarises_the_redacted_last_user_turn(
    tmp_path: Path,
) -> None:
    fakes = Fakes()
    fakes.sanitizer.redact_map = {"mail me at a@b.example": "mail me at [EMAIL]"}
    content = chat(
        (SYSTEM, "s"), (USER, "first"), (ASSISTANT, "ok"), (USER, "mail me at a@b.example")
    )
    await run(fakes, tmp_path, content)
    [line] = audit_lines(fakes.router)  # type: ignore[attr-defined]
    assert line["turns"] == 4
    assert line["prompt_summary"] == "mail me at [EMAIL]"
    assert "a@b.example" not in str(line)


async def test_a_constrained_stream_that_ran_out_of_tokens_ends_length(tmp_path: Path) -> None:
    fakes = Fakes()
    fakes.inference.default = answer(
        '{"name": "Ada", "ag', finish=types_pb2.FINISH_REASON_LENGTH, usage=Usage(9, 8)
    )
    out = await run(fakes, tmp_path, chat((USER, "json please"), fmt=SCHEMA))
    last = out[-1]
    assert last.finish_reason == types_pb2.FINISH_REASON_LENGTH  # type: ignore[attr-defined]
    assert last.usage == Usage(9, 8)  # type: ignore[attr-defined]
    [line] = audit_lines(fakes.router)  # type: ignore[attr-defined]
    assert line["finish_reason"] == "FINISH_REASON_LENGTH"


async def test_a_prompt_request_keeps_its_audit_line_without_turns(tmp_path: Path) -> None:
    fakes = Fakes()
    await run(fakes, tmp_path, Content(prompt="plain"))
    [line] = audit_lines(fakes.router)  # type: ignore[attr-defined]
    assert "turns" not in line and line["prompt_summary"] == "plain"
    assert fakes.inference.asked[0]["content"].prompt == "plain"


def test_pieces_are_the_same_type_for_chat_and_prompt() -> None:
    assert Piece("x").last is False
