"""The router's side of hosted models, with fakes of its typed clients: model groups
and their strategies, the privacy opt-in, constraints a hosted model cannot honour,
fallback from a hosted model, a dead backend's models, and the provider named in the
response and the audit line."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from headrace.services.router.audit import AuditLog
from headrace.services.router.backends import Backends, ModelInfo
from headrace.services.router.catalog import ModelGroup
from headrace.services.router.content import Content
from headrace.services.router.orchestrator import Ask, Orchestrator
from headrace.services.router.settings import RouterSettings
from headrace.services.runtime.errors import (
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from headrace.types.v1 import types_pb2
from tests.router.fakes import ALICE, FakeInference, Fakes, answer, audit_lines

LOCAL = ModelInfo("local", is_default=True)
HOSTED = ModelInfo(
    "hosted", provider="groq", hosted=True, supports_json_schema=False, supports_grammar=False
)
HOSTED_2 = ModelInfo(
    "hosted-2", provider="mistral", hosted=True, supports_json_schema=True, supports_grammar=False
)


def router(fakes: Fakes, upstream: FakeInference, tmp_path: Path, **settings: Any) -> Orchestrator:
    backends = Backends(fakes.auth, fakes.sanitizer, fakes.cache, fakes.inference, upstream)  # type: ignore[arg-type]
    settings.setdefault("task_rules", [])
    settings.setdefault("hosted_tiers", [ALICE.tier])
    return Orchestrator(backends, RouterSettings(**settings), AuditLog(tmp_path / "audit", 64))


def setup(answers: dict[str, Any] | None = None) -> tuple[Fakes, FakeInference]:
    fakes = Fakes()
    fakes.inference.models = [LOCAL]
    fakes.inference.answers["local"] = answer("from local")
    upstream = FakeInference(models=[HOSTED, HOSTED_2])
    upstream.answers.update({"hosted": answer("from groq"), "hosted-2": answer("from mistral")})
    upstream.answers.update(answers or {})
    return fakes, upstream


async def ask(orchestrator: Orchestrator, model: str, content: Content | None = None) -> list:
    request = Ask(
        content or Content(prompt="hello"), model=model, params=types_pb2.SamplingParams()
    )
    return [r async for r in orchestrator.generate(request, "credential", remaining=5.0)]


GROUP = ["local", "hosted", "hosted-2"]


async def inference_down(timeout: float | None) -> list[ModelInfo]:
    """Local inference's ListModels while it is starting or down."""
    raise Unavailable("the inference service is unavailable")


@pytest.mark.parametrize(
    ("strategy", "order"),
    [
        ("free_first", ["hosted", "hosted-2", "local"]),
        ("local_first", ["local", "hosted", "hosted-2"]),
        ("ordered", ["local", "hosted", "hosted-2"]),
    ],
)
def test_a_strategy_orders_a_groups_models(strategy: str, order: list[str]) -> None:
    group = ModelGroup(models=GROUP, strategy=strategy)  # type: ignore[arg-type]
    assert [m.name for m in group.order([LOCAL, HOSTED, HOSTED_2])] == order


async def test_free_first_answers_from_the_hosted_model_naming_its_provider(tmp_path: Path) -> None:
    fakes, upstream = setup()
    groups = {"chat": ModelGroup(models=GROUP, strategy="free_first")}
    orchestrator = router(fakes, upstream, tmp_path, model_groups=groups)
    out = await ask(orchestrator, "chat")
    assert "".join(r.text for r in out) == "from groq"
    assert {(r.model, r.provider) for r in out} == {("hosted", "groq")}
    assert fakes.inference.asked == []
    [line] = audit_lines(orchestrator)
    assert line["provider"] == "groq" and line["offered_to"] == ["groq"]


async def test_an_exhausted_or_failing_hosted_model_gives_way_before_its_first_token(
    tmp_path: Path,
) -> None:
    fakes, upstream = setup(
        {
            "hosted": ResourceExhausted("free allowance requests_per_day=5 is spent"),
            "hosted-2": Unavailable("hosted model 'hosted-2' answered HTTP 503"),
        }
    )
    groups = {"chat": ModelGroup(models=GROUP, strategy="free_first")}
    orchestrator = router(fakes, upstream, tmp_path, model_groups=groups)
    out = await ask(orchestrator, "chat")
    assert {(r.model, r.provider) for r in out} == {("local", "")}
    [line] = audit_lines(orchestrator)
    assert line["offered_to"] == ["groq", "mistral"] and "provider" not in line


async def test_a_tier_without_the_opt_in_never_reaches_a_hosted_model(tmp_path: Path) -> None:
    fakes, upstream = setup()
    groups = {"chat": ModelGroup(models=GROUP, strategy="free_first")}
    orchestrator = router(fakes, upstream, tmp_path, model_groups=groups, hosted_tiers=["paid"])
    out = await ask(orchestrator, "chat")
    assert {r.model for r in out} == {"local"}
    with pytest.raises(PermissionDenied, match="has not opted in"):
        await ask(orchestrator, "hosted")
    assert upstream.asked == []
    # A subject may opt in whatever its tier.
    orchestrator = router(
        fakes, upstream, tmp_path, hosted_tiers=["paid"], hosted_subjects=[ALICE.subject]
    )
    assert {r.model for r in await ask(orchestrator, "hosted")} == {"hosted"}


async def test_a_constraint_a_hosted_model_cannot_honour_skips_it(tmp_path: Path) -> None:
    fakes, upstream = setup()
    groups = {"chat": ModelGroup(models=GROUP, strategy="free_first")}
    orchestrator = router(fakes, upstream, tmp_path, model_groups=groups)
    schema = Content(
        prompt="hello", response_format=types_pb2.ResponseFormat(json_schema='{"type": "object"}')
    )
    assert {r.model for r in await ask(orchestrator, "chat", schema)} == {"hosted-2"}
    grammar = Content(
        prompt="hello", response_format=types_pb2.ResponseFormat(grammar='root ::= "a"')
    )
    assert {r.model for r in await ask(orchestrator, "chat", grammar)} == {"local"}
    assert [a["model"] for a in upstream.asked] == ["hosted-2"]


async def test_hosted_models_stay_listed_while_local_inference_is_down(tmp_path: Path) -> None:
    fakes, upstream = setup()
    fakes.inference.list_models = inference_down  # type: ignore[method-assign]
    orchestrator = router(fakes, upstream, tmp_path)
    out = await ask(orchestrator, "hosted")
    assert {(r.model, r.provider) for r in out} == {("hosted", "groq")}


async def test_a_local_model_asked_for_before_inference_lists_it_is_unavailable_not_unknown(
    tmp_path: Path,
) -> None:
    # While `headrace up` starts, the upstream service may list its hosted models before
    # inference has loaded its own: "unknown model 'local'; available: hosted, ..." would
    # send the user to check a name that is right. It is a retry, not a wrong name.
    fakes, upstream = setup()
    listed = fakes.inference.list_models

    fakes.inference.list_models = inference_down  # type: ignore[method-assign]
    orchestrator = router(fakes, upstream, tmp_path, models_refresh_seconds=0.0)
    with pytest.raises(Unavailable, match="'local' is not listed yet: inference has not"):
        await ask(orchestrator, "local")
    with pytest.raises(Unavailable, match="'\\(the default\\)' is not listed yet"):
        await ask(orchestrator, "")
    assert {r.model for r in await ask(orchestrator, "hosted")} == {"hosted"}
    fakes.inference.list_models = listed  # type: ignore[method-assign]
    assert {r.model for r in await ask(orchestrator, "local")} == {"local"}
    # Every backend has answered: a name none of them serves is a wrong name.
    with pytest.raises(NotFound, match="unknown model 'nope'; available: local, hosted"):
        await ask(orchestrator, "nope")


async def test_a_group_answers_from_its_listed_models_while_inference_has_not_listed(
    tmp_path: Path,
) -> None:
    fakes, upstream = setup()
    fakes.inference.list_models = inference_down  # type: ignore[method-assign]
    groups = {
        "chat": ModelGroup(models=GROUP, strategy="local_first"),
        "only-local": ModelGroup(models=["local"]),
    }
    orchestrator = router(fakes, upstream, tmp_path, model_groups=groups)
    # The unlisted local model is skipped like an unserved one: the hosted ones answer.
    assert {r.model for r in await ask(orchestrator, "chat")} == {"hosted"}
    # A group with nothing listed yet is a retry, not "no served model".
    with pytest.raises(Unavailable, match="'local' is not listed yet"):
        await ask(orchestrator, "only-local")


async def test_an_ab_arm_can_name_a_hosted_model_and_the_other_a_local_one(
    tmp_path: Path,
) -> None:
    fakes, upstream = setup()
    # Named as tests/router's experiment is: metrics are process-wide, and its test
    # checks that no other arm label exists.
    experiments = {
        "ab": {"arms": [{"name": "one", "model": "hosted"}, {"name": "two", "model": "local"}]}
    }
    served = set()
    for subject in ("s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"):
        fakes.auth.principal = replace(ALICE, subject=subject)
        orchestrator = router(fakes, upstream, tmp_path, experiments=experiments)
        out = await ask(orchestrator, "")
        served.add((out[-1].model, out[-1].provider, out[-1].arm))
    assert served == {
        ("hosted", "groq", "ab/one"),
        ("local", "", "ab/two"),
    }
