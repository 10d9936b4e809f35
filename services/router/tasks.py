"""Task presets and model routing: what a kind of request is sampled with and sent to.

A request names a task, or the router detects one from the prompt with ordered
regex rules (first match wins; none means the default task). A preset supplies
sampling parameters, which the request's explicit parameters override, and an
ordered list of models: the first is used, later ones take over when an earlier
one is unavailable or overloaded before its first token.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, Field

from headrace.services.runtime.errors import InvalidArgument
from headrace.types.v1 import types_pb2


class PresetParams(BaseModel):
    """Sampling parameters of a preset; unset fields fall through to the defaults."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repeat_penalty: float | None = None
    max_tokens: int | None = None


class TaskPreset(BaseModel):
    """One task: a description, sampling parameters and the models to try in order."""

    description: str = ""
    params: PresetParams = PresetParams()
    models: list[str] = []
    """Empty: the default model."""


class TaskRule(BaseModel):
    """Detect `task` when `pattern` (a case-insensitive regex) matches the prompt."""

    task: str
    pattern: str = Field(min_length=1)


# From practice: factual answers want little randomness; stories more; dialogue is
# short; long text needs room; code and math want (near) determinism.
DEFAULT_TASKS: dict[str, TaskPreset] = {
    "factual": TaskPreset(
        description="Short factual answers.",
        params=PresetParams(temperature=0.2, top_p=0.9, max_tokens=256),
    ),
    "creative": TaskPreset(
        description="Stories, poems, brainstorming.",
        params=PresetParams(temperature=0.8, top_p=0.95, max_tokens=400),
    ),
    "dialogue": TaskPreset(
        description="Chat turns: short replies.",
        params=PresetParams(temperature=0.7, top_p=0.9, max_tokens=50),
    ),
    "long": TaskPreset(
        description="Essays and explanations in depth.",
        params=PresetParams(temperature=0.7, top_p=0.95, max_tokens=800),
    ),
    "code": TaskPreset(
        description="Writing and explaining code.",
        params=PresetParams(temperature=0.2, top_p=0.95, max_tokens=512),
    ),
    "math": TaskPreset(
        description="Arithmetic and reasoning with one right answer.",
        params=PresetParams(temperature=0.0, max_tokens=256),
    ),
}

DEFAULT_RULES: list[TaskRule] = [
    TaskRule(
        task="code",
        pattern=r"```|\b(def|class|function|python|javascript|typescript|rust|sql|regex|code|bug|compile|stack trace)\b",
    ),
    TaskRule(
        task="math",
        pattern=r"\d\s*[-+*/^×÷=]\s*\d|\b(calculate|compute|solve|equation|integral|derivative|sum of|how many|percent(age)?)\b",
    ),
    TaskRule(
        task="creative",
        pattern=r"\b(story|stories|poem|poetry|haiku|once upon a time|imagine|fiction|lyrics|fairy tale)\b",
    ),
    TaskRule(
        task="long",
        pattern=r"\b(essay|article|in depth|in detail|detailed|comprehensive|report on)\b",
    ),
    TaskRule(
        task="dialogue", pattern=r"^\s*(hi|hello|hey|good (morning|evening))\b|\bhow are you\b"
    ),
    TaskRule(task="factual", pattern=r"\b(what|who|when|where|which|define|capital of)\b"),
]


def fill_unset(
    params: types_pb2.SamplingParams, values: Mapping[str, object]
) -> types_pb2.SamplingParams:
    """A copy of `params` with each field it leaves unset taken from `values`
    (None values skipped): explicit parameters always win."""
    filled = types_pb2.SamplingParams()
    filled.CopyFrom(params)
    for name, value in values.items():
        if value is not None and not filled.HasField(name):
            setattr(filled, name, value)
    return filled


@dataclass(frozen=True)
class Route:
    """What the router does with one request."""

    task: str
    params: types_pb2.SamplingParams
    models: list[str]


class TaskRouter:
    """Presets, detection rules and routing from settings."""

    def __init__(
        self, tasks: dict[str, TaskPreset], rules: list[TaskRule], default_task: str
    ) -> None:
        self.tasks = tasks
        self.default_task = default_task
        self._rules = []
        for rule in rules:
            if rule.task not in tasks:
                raise ValueError(f"task rule for unknown task {rule.task!r}")
            self._rules.append((rule.task, re.compile(rule.pattern, re.IGNORECASE)))
        if default_task and default_task not in tasks:
            raise ValueError(f"default task {default_task!r} is not a preset")

    def detect(self, prompt: str) -> str:
        """The first rule's task that matches the prompt, else the default task."""
        for task, pattern in self._rules:
            if pattern.search(prompt):
                return task
        return self.default_task

    def route(self, task: str, prompt: str, params: types_pb2.SamplingParams) -> Route:
        """The task to apply (named or detected), merged params, and models to try."""
        if task and task not in self.tasks:
            raise InvalidArgument(
                f"unknown task {task!r}; available: {', '.join(sorted(self.tasks))}"
            )
        name = task or self.detect(prompt)
        preset = self.tasks.get(name)
        if preset is None:
            return Route(name, fill_unset(params, {}), [])
        return Route(name, fill_unset(params, preset.params.model_dump()), list(preset.models))
