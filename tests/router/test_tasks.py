"""Task presets, detection and routing."""

from __future__ import annotations

import pytest

from headrace.services.router.tasks import (
    DEFAULT_RULES,
    DEFAULT_TASKS,
    PresetParams,
    TaskPreset,
    TaskRouter,
)
from headrace.services.runtime.errors import InvalidArgument
from headrace.types.v1 import types_pb2


@pytest.fixture
def router() -> TaskRouter:
    tasks = {
        **DEFAULT_TASKS,
        "math": TaskPreset(
            params=PresetParams(temperature=0.0, max_tokens=128), models=["math-model"]
        ),
        "creative": TaskPreset(params=PresetParams(temperature=0.9), models=["story-model"]),
    }
    return TaskRouter(tasks, DEFAULT_RULES, default_task="")


def test_a_named_preset_applies_its_parameters(router: TaskRouter) -> None:
    route = router.route("factual", "anything", types_pb2.SamplingParams())
    assert route.task == "factual"
    assert route.params.temperature == pytest.approx(0.2)
    assert route.params.top_p == pytest.approx(0.9)


def test_explicit_parameters_win_over_the_preset(router: TaskRouter) -> None:
    route = router.route("factual", "x", types_pb2.SamplingParams(temperature=1.3, max_tokens=7))
    assert route.params.temperature == pytest.approx(1.3)
    assert route.params.max_tokens == 7
    assert route.params.top_p == pytest.approx(0.9), (
        "fields the request leaves unset come from the preset"
    )


@pytest.mark.parametrize(
    ("prompt", "task"),
    [
        ("What is 17 * 23?", "math"),
        ("Solve the equation x^2 = 9", "math"),
        ("Write a story about a dragon", "creative"),
        ("Once upon a time there was a fox", "creative"),
        ("def add(a, b): fix this python bug", "code"),
        ("Write a detailed essay on rivers", "long"),
        ("hello there!", "dialogue"),
        ("Who wrote Hamlet?", "factual"),
        ("Lorem ipsum dolor sit amet", ""),
    ],
)
def test_the_task_is_detected_from_the_prompt(router: TaskRouter, prompt: str, task: str) -> None:
    assert router.detect(prompt) == task


def test_a_math_prompt_and_a_story_prompt_go_to_different_models(router: TaskRouter) -> None:
    math = router.route("", "What is 12 + 30?", types_pb2.SamplingParams())
    story = router.route("", "Tell me a story about the sea", types_pb2.SamplingParams())
    assert (math.task, math.models) == ("math", ["math-model"])
    assert (story.task, story.models) == ("creative", ["story-model"])
    assert math.params.temperature == 0.0 and story.params.temperature == pytest.approx(0.9)


def test_an_unknown_task_is_invalid_argument_naming_the_presets(router: TaskRouter) -> None:
    with pytest.raises(InvalidArgument, match="factual"):
        router.route("poetry-slam", "x", types_pb2.SamplingParams())


def test_rules_for_unknown_tasks_are_refused_at_start() -> None:
    from headrace.services.router.tasks import TaskRule

    with pytest.raises(ValueError, match="unknown task"):
        TaskRouter(DEFAULT_TASKS, [TaskRule(task="nope", pattern="x")], "")
