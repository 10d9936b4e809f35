"""The pipeline's stages with plain fakes of the typed clients: fallback before the
first token, the output filter, and what finish computes from the record (quota
settlement, audit line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from headrace.services.router.backends import ModelInfo, Piece, Principal, Usage
from headrace.services.router.content import Content
from headrace.services.router.orchestrator import Ask
from headrace.services.runtime.errors import PermissionDenied, Unavailable
from headrace.types.v1 import types_pb2
from tests.router.fakes import FakeCache, Fakes, answer, audit_lines

GREEDY = types_pb2.SamplingParams(temperature=0.0)


async def generate(fakes: Fakes, tmp_path: Path, **settings: object) -> tuple[list, object]:
    router = fakes.orchestrator(tmp_path, task_rules=[], **settings)
    ask = Ask(Content(prompt="hello"), params=GREEDY, task="t")
    out = [r async for r in router.generate(ask, "credential", remaining=5.0)]
    return out, router


async def test_an_unavailable_model_gives_way_to_the_next_before_its_first_token(
    tmp_path: Path,
) -> None:
    fakes = Fakes()
    fakes.inference.models = [ModelInfo("a", is_default=True), ModelInfo("b")]
    fakes.inference.answers["a"] = Unavailable("the inference service is unavailable")
    out, router = await generate(fakes, tmp_path, tasks={"t": {"models": ["a", "b"]}})
    assert [r.model for r in out] == ["b", "b"]
    assert [a["model"] for a in fakes.inference.asked] == ["a", "b"]
    [line] = audit_lines(router)  # type: ignore[arg-type]
    assert line["model"] == "b" and line["status"] == "OK"


async def test_a_registry_alias_is_served_and_recorded_as_its_model(tmp_path: Path) -> None:
    fakes = Fakes()
    fakes.inference.models = [
        ModelInfo("a", is_default=True),
        ModelInfo("b", aliases=("gpt-4o-mini",)),
    ]
    router = fakes.orchestrator(tmp_path, task_rules=[], tasks={"t": {}})
    ask = Ask(Content(prompt="hello"), params=GREEDY, task="t", model="gpt-4o-mini")
    out = [r async for r in router.generate(ask, "credential", remaining=5.0)]
    assert {r.model for r in out} == {"b"}
    assert [a["model"] for a in fakes.inference.asked] == ["b"]
    [line] = audit_lines(router)  # type: ignore[arg-type]
    assert line["model"] == "b"


async def test_a_blocked_output_ends_content_filter_and_the_cache_keeps_nothing(
    tmp_path: Path,
) -> None:
    fakes = Fakes()
    fakes.sanitizer.output_filtered = True
    fakes.sanitizer.blocked_after = 1
    fakes.inference.default = answer("fine ", "bad")
    out, _ = await generate(fakes, tmp_path, tasks={"t": {}})
    assert [r.text for r in out] == ["fine ", ""]
    assert out[-1].finish_reason == types_pb2.FINISH_REASON_CONTENT_FILTER
    assert out[-1].usage is None, "as before: a filtered end carries no usage"
    [copy] = fakes.cache.copies
    assert copy.final is None and copy.closed, "a filtered response is never completed"


async def test_finish_settles_the_reservation_with_the_tokens_used(tmp_path: Path) -> None:
    fakes = Fakes()
    fakes.auth.principal = Principal("alice", "free", reserved_tokens=300)
    fakes.inference.default = answer("x", usage=Usage(7, 5))
    await generate(fakes, tmp_path, tasks={"t": {}})
    await asyncio_settle()
    assert [used for _, used in fakes.auth.settled] == [12]


async def test_a_cache_hit_costs_no_tokens(tmp_path: Path) -> None:
    fakes = Fakes(cache=FakeCache(hit=[Piece("hit", types_pb2.FINISH_REASON_STOP, Usage(4, 1))]))
    fakes.auth.principal = Principal("alice", "free", reserved_tokens=300)
    out, router = await generate(fakes, tmp_path, tasks={"t": {}})
    await asyncio_settle()
    assert out[0].cached and [used for _, used in fakes.auth.settled] == [0]
    [line] = audit_lines(router)  # type: ignore[arg-type]
    assert line["cached"] is True and fakes.inference.asked == []


@pytest.mark.parametrize("filtered", [True, False])
async def test_the_cache_key_names_the_output_policy_the_answer_is_filtered_with(
    tmp_path: Path, filtered: bool
) -> None:
    fakes = Fakes()
    fakes.sanitizer.output_filtered = filtered
    fakes.inference.default = answer("x")
    await generate(fakes, tmp_path, tasks={"t": {}})
    [lookup] = fakes.cache.lookups
    [copy] = fakes.cache.copies
    expected = "filtered" if filtered else "unfiltered"
    assert lookup.output_policy == copy.key.output_policy == expected
    assert lookup.to_proto().output_policy == expected


async def test_a_refused_prompt_gives_its_reservation_back_and_is_audited(
    tmp_path: Path,
) -> None:
    fakes = Fakes()
    fakes.auth.principal = Principal("alice", "free", reserved_tokens=300)
    fakes.sanitizer.error = PermissionDenied("blocked by rule injection.ignore")
    with pytest.raises(PermissionDenied):
        await generate(fakes, tmp_path, tasks={"t": {}})
    await asyncio_settle()
    assert [used for _, used in fakes.auth.settled] == [0]
    assert fakes.inference.asked == []


async def test_the_reservation_is_the_presets_max_tokens_and_the_content_size(
    tmp_path: Path,
) -> None:
    fakes = Fakes()
    await generate(fakes, tmp_path, tasks={"t": {"params": {"max_tokens": 50}}})
    [asked] = fakes.auth.asked
    assert asked["reserve_tokens"] == 50 and asked["content_bytes"] == len("hello")


async def asyncio_settle() -> None:
    import asyncio

    for _ in range(3):
        await asyncio.sleep(0)


@pytest.mark.parametrize("constrained", [True, False])
async def test_a_redacted_json_reply_ends_content_filter_and_free_text_ends_as_it_did(
    tmp_path: Path, constrained: bool
) -> None:
    from headrace.services.router.backends import OutputRules
    from headrace.services.runtime.output_filter.redaction import REDACTION_RULES
    from headrace.services.runtime.output_filter.rules import Direction, RuleSet

    fakes = Fakes()
    rules = OutputRules("v1", RuleSet(list(REDACTION_RULES), Direction.OUTPUT))

    async def output_rules(tier: str, remaining: float | None) -> OutputRules:
        return rules

    fakes.sanitizer.output_rules = output_rules  # type: ignore[method-assign]
    fakes.inference.default = answer('{"age": ', "4111 1111 1111 1111", "}")
    router = fakes.orchestrator(tmp_path, task_rules=[], tasks={"t": {}})
    fmt = types_pb2.ResponseFormat(json_object=True) if constrained else None
    content = Content(prompt="hello", response_format=fmt or types_pb2.ResponseFormat())
    out = [
        r
        async for r in router.generate(
            Ask(content, params=GREEDY, task="t"), "credential", remaining=5.0
        )
    ]
    text = "".join(r.text for r in out)
    assert "4111" not in text and "[CARD]" in text
    expected = (
        types_pb2.FINISH_REASON_CONTENT_FILTER if constrained else types_pb2.FINISH_REASON_STOP
    )
    assert out[-1].finish_reason == expected
