"""The router's per-model, per-task, per-arm metrics: labels come from settings and the
model catalog, so a request naming something unknown never makes a new series."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from headrace.auth.v1 import auth_pb2
from headrace.cache.v1 import cache_pb2
from headrace.inference.v1 import inference_pb2
from headrace.router.v1 import router_pb2
from headrace.sanitizer.v1 import sanitizer_pb2
from headrace.services.router import metrics
from headrace.services.router.audit import AuditLog
from headrace.services.router.orchestrator import Backends, Orchestrator
from headrace.services.router.settings import RouterSettings
from headrace.services.runtime.errors import InvalidArgument, NotFound
from headrace.types.v1 import types_pb2


class Call:
    """A unary call's awaitable, as a grpc.aio stub returns it."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply

    def __await__(self) -> Any:
        async def reply() -> Any:
            return self.reply

        return reply().__await__()


class Stream:
    """A server-streaming call: async-iterable, cancellable."""

    def __init__(self, replies: list[Any]) -> None:
        self.replies = replies

    async def _iterate(self) -> AsyncIterator[Any]:
        for reply in self.replies:
            yield reply

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    def cancel(self) -> bool:
        return True


class Auth:
    def Authorize(self, request: auth_pb2.AuthorizeRequest, **_: Any) -> Call:
        return Call(auth_pb2.AuthorizeResponse(subject="alice", tier="free"))


class Sanitizer:
    def CheckPrompt(self, request: sanitizer_pb2.CheckPromptRequest, **_: Any) -> Call:
        return Call(sanitizer_pb2.CheckPromptResponse(prompt=request.prompt))


class Inference:
    def ListModels(self, request: inference_pb2.ListModelsRequest, **_: Any) -> Call:
        return Call(
            inference_pb2.ListModelsResponse(
                models=[inference_pb2.ModelInfo(name="served", is_default=True)]
            )
        )


class Cache:
    """Every lookup is a hit: three words, then the end."""

    def Lookup(self, request: cache_pb2.LookupRequest, **_: Any) -> Stream:
        usage = types_pb2.Usage(prompt_tokens=5, completion_tokens=3)
        return Stream(
            [
                cache_pb2.LookupResponse(hit=True, text="one "),
                cache_pb2.LookupResponse(hit=True, text="two "),
                cache_pb2.LookupResponse(
                    hit=True,
                    text="three",
                    finish_reason=types_pb2.FINISH_REASON_STOP,
                    usage=usage,
                ),
            ]
        )


@pytest.fixture
def orchestrator(tmp_path: Path) -> Orchestrator:
    settings = RouterSettings(
        experiments={
            "ab": {"arms": [{"name": "one"}, {"name": "two"}]},  # every task
        },
    )
    backends = Backends(Auth(), Sanitizer(), Cache(), Inference())  # type: ignore[arg-type]
    return Orchestrator(backends, settings, AuditLog(tmp_path / "audit", queue_size=16))


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


async def generate(orchestrator: Orchestrator, **fields: Any) -> list[router_pb2.GenerateResponse]:
    # Greedy, so the (always hitting) cache is asked: sampling without a seed is not.
    fields.setdefault("params", types_pb2.SamplingParams(temperature=0.0))
    request = router_pb2.GenerateRequest(prompt="hello there", **fields)
    return [r async for r in orchestrator.generate(request, "credential", remaining=5.0)]


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
