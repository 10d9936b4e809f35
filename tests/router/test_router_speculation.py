"""Admission hidden behind prefill (issue 22) with plain fakes: which requests
speculate, and that every way a request can end other than "both said yes to exactly
this" cancels the held prefill, with nothing of the raw prompt going anywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from headrace.services.router.backends import ModelInfo, Piece, Usage
from headrace.services.router.content import Content
from headrace.services.router.orchestrator import Ask, Orchestrator
from headrace.services.router.speculation import AdmissionMemory
from headrace.services.runtime.errors import PermissionDenied, ResourceExhausted, Unavailable
from headrace.types.v1 import types_pb2
from tests.router.fakes import Fakes, answer, audit_lines

GREEDY = types_pb2.SamplingParams(temperature=0.0)
SECRET = "mail me at alice@example.com"
REDACTED = "mail me at [EMAIL]"


def outcome(name: str) -> float:
    return (
        REGISTRY.get_sample_value("headrace_router_speculative_prefills_total", {"outcome": name})
        or 0.0
    )


def router_of(fakes: Fakes, tmp_path: Path, **settings: Any) -> Orchestrator:
    settings.setdefault("tasks", {"t": {}})
    return fakes.orchestrator(tmp_path, task_rules=[], **settings)


async def ask(
    router: Orchestrator, prompt: str = "hello", credential: str = "key-a", **kw: Any
) -> list[Any]:
    request = Ask(Content(prompt=prompt), params=GREEDY, task="t", **kw)
    return [r async for r in router.generate(request, credential, remaining=5.0)]


def everything_written(fakes: Fakes, router: Orchestrator, replies: list[Any]) -> str:
    """The audit lines, the cache copies' keys and texts, and the replies, as text."""
    copies = [(c.key.content.prompt if c.key else "", c.texts) for c in fakes.cache.copies]
    return json.dumps([audit_lines(router), copies, [r.text for r in replies]], default=str)


async def test_an_unknown_credential_never_speculates(tmp_path: Path) -> None:
    fakes = Fakes()
    router = router_of(fakes, tmp_path)
    await ask(router, credential="first-time")
    await ask(router, credential="another-first-time")
    assert fakes.inference.held == []


async def test_a_recently_admitted_credential_speculates_and_gets_the_same_reply(
    tmp_path: Path,
) -> None:
    fakes = Fakes()
    fakes.inference.default = answer("the ", "same ", "reply")
    router = router_of(fakes, tmp_path)
    without = await ask(router)
    used = outcome("used")
    with_ = await ask(router)
    [held] = fakes.inference.held
    assert held.committed and not held.cancelled
    assert held.model == "served" and held.content == Content(prompt="hello")
    assert [(r.text, r.finish_reason) for r in with_] == [
        (r.text, r.finish_reason) for r in without
    ]
    assert len(fakes.inference.asked) == 1, "the second request was not generated again"
    assert outcome("used") == used + 1
    assert audit_lines(router)[-1]["speculation"] == "used"


async def test_speculation_can_be_turned_off(tmp_path: Path) -> None:
    fakes = Fakes()
    router = router_of(fakes, tmp_path, speculate=False)
    await ask(router)
    await ask(router)
    assert fakes.inference.held == []


@pytest.mark.parametrize(
    "refusal",
    [
        pytest.param(
            ("sanitizer", PermissionDenied("blocked by rule injection.ignore")), id="sanitizer"
        ),
        pytest.param(("auth", ResourceExhausted("token quota exhausted")), id="quota"),
        pytest.param(("auth", Unavailable("the auth service is unavailable")), id="auth-down"),
    ],
)
async def test_a_refusal_cancels_the_prefill_and_the_credential_stops_speculating(
    tmp_path: Path, refusal: tuple[str, Exception]
) -> None:
    service, error = refusal
    fakes = Fakes()
    router = router_of(fakes, tmp_path)
    await ask(router)
    refused = outcome("refused")
    getattr(fakes, service).error = error
    with pytest.raises(type(error)):
        await ask(router, SECRET)
    [held] = fakes.inference.held
    assert held.cancelled and not held.committed, "a refused request's prefill was released"
    assert outcome("refused") == refused + 1
    assert SECRET not in everything_written(fakes, router, [])
    # Refused within the window: no prefill work for this credential, even once the
    # refusal is over; another recently admitted credential still speculates.
    getattr(fakes, service).error = None
    await ask(router)
    assert len(fakes.inference.held) == 1
    await ask(router, credential="key-b")
    await ask(router, credential="key-b")
    assert len(fakes.inference.held) == 2 and fakes.inference.held[1].committed


async def test_a_redacted_prompt_cancels_the_prefill_and_runs_the_checked_one_afresh(
    tmp_path: Path,
) -> None:
    fakes = Fakes()
    fakes.sanitizer.redact_map = {SECRET: REDACTED}
    router = router_of(fakes, tmp_path)
    await ask(router)
    discarded = outcome("discarded")
    replies = await ask(router, SECRET)
    [held] = fakes.inference.held
    assert held.cancelled and not held.committed
    assert fakes.inference.asked[-1]["content"].prompt == REDACTED
    assert outcome("discarded") == discarded + 1
    assert SECRET not in everything_written(fakes, router, replies)
    assert audit_lines(router)[-1]["speculation"] == "discarded"


async def test_a_cache_hit_cancels_the_prefill(tmp_path: Path) -> None:
    fakes = Fakes()
    router = router_of(fakes, tmp_path)
    await ask(router)
    asked = len(fakes.inference.asked)
    # A hit, or a single-flight follower replaying its leader: both come as pieces
    # of the cache's Lookup.
    fakes.cache.hit = [Piece("hit", types_pb2.FINISH_REASON_STOP, Usage(4, 1))]
    replies = await ask(router)
    [held] = fakes.inference.held
    assert held.cancelled and not held.committed
    assert replies[0].cached and len(fakes.inference.asked) == asked


async def test_other_parameters_after_planning_cancel_the_prefill(tmp_path: Path) -> None:
    fakes = Fakes()
    router = router_of(
        fakes,
        tmp_path,
        experiments={
            "e": {
                "tasks": ["t"],
                "arms": [
                    {"name": "a", "params": {"top_k": 7}},
                    {"name": "b", "params": {"top_k": 9}},
                ],
            }
        },
    )
    await ask(router)
    await ask(router)
    [held] = fakes.inference.held
    assert held.cancelled
    assert fakes.inference.asked[-1]["params"].top_k in (7, 9)


async def test_a_hosted_model_never_speculates(tmp_path: Path) -> None:
    fakes = Fakes()
    fakes.inference.models = [
        ModelInfo("served", is_default=True),
        ModelInfo("cloud", provider="acme", hosted=True),
    ]
    router = router_of(fakes, tmp_path, tasks={"t": {"models": ["cloud"]}}, hosted_tiers=["free"])
    await ask(router)
    await ask(router)
    assert fakes.inference.held == []
    assert [a["model"] for a in fakes.inference.asked] == ["cloud", "cloud"]


async def test_a_failed_speculation_is_generated_afresh(tmp_path: Path) -> None:
    fakes = Fakes()
    fakes.inference.default = answer("fresh")
    fakes.inference.speculation_error = ResourceExhausted("no free slot")
    router = router_of(fakes, tmp_path)
    await ask(router)
    failed = outcome("failed")
    replies = await ask(router)
    assert fakes.inference.held[0].committed
    assert "".join(r.text for r in replies) == "fresh" and len(fakes.inference.asked) == 2
    assert outcome("failed") == failed + 1


def test_admission_memory_forgets_after_the_window() -> None:
    now = [0.0]
    memory = AdmissionMemory(60.0, clock=lambda: now[0])
    assert memory.recent_tier("k") is None
    memory.admitted("k", "free")
    assert memory.recent_tier("k") == "free"
    now[0] = 61.0
    assert memory.recent_tier("k") is None, "admitted too long ago"
    memory.admitted("k", "free")
    memory.refused("k")
    memory.admitted("k", "free")
    assert memory.recent_tier("k") is None, "refused within the window"
    now[0] = 122.0
    memory.admitted("k", "pro")
    assert memory.recent_tier("k") == "pro", "the refusal is older than the window"
    assert all(isinstance(key, bytes) for key in memory._seen), "no raw credential kept"
