"""The router's per-model, per-task, per-arm metrics: labels come from settings and the
model catalog, so a request naming something unknown never makes a new series."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from headrace.services.router import metrics
from headrace.services.router.backends import Piece, Usage
from headrace.services.router.content import Content
from headrace.services.router.orchestrator import Ask, Orchestrator
from headrace.services.router.record import Reply
from headrace.services.runtime.errors import InvalidArgument, NotFound
from headrace.types.v1 import types_pb2
from tests.router.fakes import FakeCache, Fakes


@pytest.fixture
def orchestrator(tmp_path: Path) -> Orchestrator:
    # Every lookup is a hit: three words, then the end.
    hit = [
        Piece("one "),
        Piece("two "),
        Piece("three", types_pb2.FINISH_REASON_STOP, Usage(prompt_tokens=5, completion_tokens=3)),
    ]
    fakes = Fakes(cache=FakeCache(hit=hit))
    return fakes.orchestrator(
        tmp_path,
        experiments={
            "ab": {"arms": [{"name": "one"}, {"name": "two"}]},  # every task
        },
    )


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def label_values(label: str) -> set[str]:
    """Every value `label` has on any router series."""
    values = set()
    for family in (
        metrics.REQUESTS,
        metrics.TIME_TO_FIRST_TOKEN,
        metrics.REQUEST_DURATION,
        metrics.GENERATED_TOKENS,
        metrics.PROMPT_TOKENS,
    ):
        for collected in family.collect():
            values |= {s.labels[label] for s in collected.samples if label in s.labels}
    return values


async def generate(orchestrator: Orchestrator, **fields: Any) -> list[Reply]:
    # Greedy, so the (always hitting) cache is asked: sampling without a seed is not.
    fields.setdefault("params", types_pb2.SamplingParams(temperature=0.0))
    ask = Ask(Content(prompt="hello there"), **fields)
    return [r async for r in orchestrator.generate(ask, "credential", remaining=5.0)]


async def test_an_answer_is_counted_under_the_served_model_its_task_and_its_arm(
    orchestrator: Orchestrator,
) -> None:
    task = orchestrator.tasks.route("", "hello there", types_pb2.SamplingParams()).task
    assignment = orchestrator.experiments.for_request(task, "alice")
    assert assignment is not None
    arm = assignment.label  # "ab/one" or "ab/two": from settings, sticky per subject
    served = {"model": "served", "arm": arm}
    before = {
        "ok": sample(
            "headrace_router_requests_total", **served, task=task, code="OK", cached="true"
        ),
        "first": sample("headrace_router_time_to_first_token_seconds_count", **served),
        "tokens": sample("headrace_router_generated_tokens_total", **served, cached="true"),
        "prompt": sample("headrace_router_prompt_tokens_total", **served),
    }
    replies = await generate(orchestrator)
    assert "".join(r.text for r in replies) == "one two three"
    assert replies[-1].arm == arm
    after = {
        "ok": sample(
            "headrace_router_requests_total", **served, task=task, code="OK", cached="true"
        ),
        "first": sample("headrace_router_time_to_first_token_seconds_count", **served),
        "tokens": sample("headrace_router_generated_tokens_total", **served, cached="true"),
        "prompt": sample("headrace_router_prompt_tokens_total", **served),
    }
    assert {k: after[k] - before[k] for k in after} == {
        "ok": 1,
        "first": 1,
        "tokens": 3,
        "prompt": 5,
    }


async def test_an_unknown_model_is_counted_under_none_and_makes_no_series(
    orchestrator: Orchestrator,
) -> None:
    task = orchestrator.tasks.route("", "hello there", types_pb2.SamplingParams()).task

    def not_found_under_none() -> float:
        return sum(
            sample(
                "headrace_router_requests_total",
                model="none",
                task=task,
                arm=arm,
                code="NOT_FOUND",
                cached="false",
            )
            for arm in ("ab/one", "ab/two")
        )

    before = not_found_under_none()
    with pytest.raises(NotFound):
        await generate(orchestrator, model="made-up-by-a-caller")
    assert not_found_under_none() - before == 1
    assert "made-up-by-a-caller" not in label_values("model")
    # Failed before a first token: no first-token observation, no tokens.
    assert sample("headrace_router_time_to_first_token_seconds_count", model="none") == 0


async def test_an_unknown_task_is_counted_under_none_and_makes_no_series(
    orchestrator: Orchestrator,
) -> None:
    labels = {"model": "none", "task": "none", "arm": "none", "cached": "false"}
    before = sample("headrace_router_requests_total", **labels, code="INVALID_ARGUMENT")
    with pytest.raises(InvalidArgument):
        await generate(orchestrator, task="task-made-up-by-a-caller")
    assert sample("headrace_router_requests_total", **labels, code="INVALID_ARGUMENT") == (
        before + 1
    )
    assert "task-made-up-by-a-caller" not in label_values("task")
    assert label_values("arm") <= {"none", "ab/one", "ab/two"}
