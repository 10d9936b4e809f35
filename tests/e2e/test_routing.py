"""Task routing through Envoy: presets, per-task models, and fallback when a model is
overloaded before its first token."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.types.v1 import types_pb2
from tests.support.suite import RunningSuite, running_suite
from tests.support.tiny_model import write_tiny_lora

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[RunningSuite]:
    lora = write_tiny_lora(tmp_path_factory.mktemp("lora") / "math.gguf")
    models = [
        {"name": "tiny", "path": str(tiny_model), "context_size": 4096},
        {
            "name": "tiny-math",
            "path": str(tiny_model),
            "context_size": 4096,
            "lora": [{"path": str(lora)}],
        },
        {"name": "tiny-busy", "path": str(tiny_model), "context_size": 4096},
    ]
    tasks = {
        "math": {"params": {"temperature": 0.0, "max_tokens": 24}, "models": ["tiny-math"]},
        "creative": {"params": {"temperature": 0.0, "max_tokens": 12}, "models": ["tiny"]},
        "factual": {"params": {"temperature": 0.0}, "models": ["tiny-busy", "tiny"]},
    }
    with running_suite(
        tmp_path_factory.mktemp("routing-home"),
        tiny_model,
        extra_env={
            "HEADRACE_MODELS": json.dumps(models),
            "HEADRACE_TASKS": json.dumps(tasks),
            "HEADRACE_TASK_RULES": json.dumps(
                [
                    {"task": "math", "pattern": r"\d\s*[-+*/]\s*\d"},
                    {"task": "creative", "pattern": r"\bstory\b"},
                ]
            ),
            "HEADRACE_EXPERIMENTS": json.dumps(
                {
                    "length": {
                        "tasks": ["creative"],
                        "arms": [
                            {"name": "short", "params": {"max_tokens": 3}},
                            {"name": "long", "params": {"max_tokens": 6}},
                        ],
                    }
                }
            ),
            "HEADRACE_SLOTS": "1",
            "HEADRACE_QUEUE_SIZE": "0",
        },
    ) as running:
        yield running


def ask(
    stub: router_pb2_grpc.RouterServiceStub, suite: RunningSuite, prompt: str, **kw: object
) -> list[router_pb2.GenerateResponse]:
    request = router_pb2.GenerateRequest(prompt=prompt, bypass_cache=True, **kw)  # type: ignore[arg-type]
    return list(
        stub.Generate(request, metadata=(("authorization", f"Bearer {suite.token()}"),), timeout=30)
    )


def test_presets_apply_and_a_math_and_a_story_prompt_go_to_different_models(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    math = ask(stub, suite, "What is 12 + 30?")
    story = ask(stub, suite, "Tell me a story about the sea")
    assert (math[-1].model, math[-1].task) == ("tiny-math", "math")
    assert (story[-1].model, story[-1].task) == ("tiny", "creative")
    assert math[-1].usage.completion_tokens == 24  # the math preset's max_tokens
    # Stories are in the "length" experiment: the arm's max_tokens beats the preset's.
    assert story[-1].usage.completion_tokens in (3, 6)
    explicit = ask(stub, suite, "Tell me a story", params=types_pb2.SamplingParams(max_tokens=2))
    assert explicit[-1].usage.completion_tokens == 2, "explicit params win over preset and arm"


def test_a_fallback_takes_over_when_the_first_model_is_overloaded(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    token = suite.token()
    hog = stub.Generate(
        router_pb2.GenerateRequest(
            prompt="keep busy",
            model="tiny-busy",
            bypass_cache=True,
            params=types_pb2.SamplingParams(max_tokens=4000, temperature=0.0),
        ),
        metadata=(("authorization", f"Bearer {token}"),),
        timeout=60,
    )
    next(hog)  # tiny-busy's only slot is decoding; its queue holds nothing
    try:
        answer = ask(stub, suite, "anything at all", task="factual")
    finally:
        hog.cancel()
    assert answer[-1].model == "tiny" and answer[-1].task == "factual"
    assert "model_fallback" in suite.log()


def test_list_tasks_shows_presets_and_models(suite: RunningSuite) -> None:
    with grpc.insecure_channel(suite.public) as channel:
        reply = router_pb2_grpc.RouterServiceStub(channel).ListTasks(
            router_pb2.ListTasksRequest(),
            metadata=(("authorization", f"Bearer {suite.token()}"),),
        )
    tasks = {t.name: t for t in reply.tasks}
    assert list(tasks["factual"].models) == ["tiny-busy", "tiny"]
    assert tasks["math"].params.max_tokens == 24


def test_experiment_arms_are_sticky_reported_and_rated(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    import subprocess
    import sys
    import uuid

    arms: dict[str, str] = {}
    for i in range(12):
        subject = f"ab-{uuid.uuid4().hex[:6]}-{i}"
        token = suite.token(subject)
        metadata = (("authorization", f"Bearer {token}"),)
        request = router_pb2.GenerateRequest(prompt="Tell me a story", bypass_cache=True)
        seen = set()
        for _ in range(2):
            stream = stub.Generate(request, metadata=metadata, timeout=30)
            messages = list(stream)
            label = messages[-1].arm
            assert label.startswith("length/")
            assert dict(stream.trailing_metadata())["x-headrace-arm"] == label
            tokens = messages[-1].usage.completion_tokens
            assert tokens == (3 if label == "length/short" else 6)
            seen.add(label)
        assert len(seen) == 1, "a subject keeps its arm"
        arms[subject] = seen.pop()
        rating = 5.0 if arms[subject] == "length/long" else 2.0
        stub.Feedback(
            router_pb2.FeedbackRequest(request_id=messages[-1].request_id, rating=rating),
            metadata=metadata,
            timeout=10,
        )
    with pytest.raises(grpc.RpcError) as info:
        stub.Feedback(
            router_pb2.FeedbackRequest(request_id="not-a-request", rating=3),
            metadata=(("authorization", f"Bearer {suite.token()}"),),
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    time.sleep(0.5)  # the audit and feedback writers flush asynchronously
    out = subprocess.run(
        [str(Path(sys.executable).parent / "headrace"), "experiments", "report", "length"],
        env=suite.env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "short" in out and "long" in out
    if {"length/short", "length/long"} <= set(arms.values()):
        assert "5.00" in out and "2.00" in out
