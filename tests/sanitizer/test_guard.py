"""The guard model path: CheckPrompt asks inference.Generate (a real gRPC call to a
stand-in inference server) and honours the tier's budget and fail-open/closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from headrace.inference.v1 import inference_pb2, inference_pb2_grpc
from headrace.sanitizer.v1 import sanitizer_pb2
from headrace.services.runtime.errors import PermissionDenied, Unavailable
from headrace.services.sanitizer.guard import (
    GUARD_SIGNAL,
    GUARD_UNAVAILABLE,
    GuardPolicy,
    GuardVerdict,
    read_answer,
)
from headrace.services.sanitizer.guard_client import GuardClient
from headrace.services.sanitizer.policy import DECIDED_BY_TRAILER
from headrace.services.sanitizer.servicer import SanitizerServicer
from headrace.services.sanitizer.settings import SanitizerSettings


class Inference(inference_pb2_grpc.InferenceServiceServicer):
    """Answers every Generate with `answer`, one word a message, after `delay_s`."""

    def __init__(self) -> None:
        self.answer = "unsafe"
        self.delay_s = 0.0
        self.requests: list[inference_pb2.GenerateRequest] = []

    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb2.GenerateResponse]:
        self.requests.append(request)
        await asyncio.sleep(self.delay_s)
        for word in self.answer.split(" "):
            yield inference_pb2.GenerateResponse(text=word + " ")


class _Context:
    """Stands in for grpc.aio.ServicerContext; CheckPrompt only passes it along."""


@pytest.fixture
async def inference() -> AsyncIterator[tuple[Inference, GuardClient]]:
    server = grpc.aio.server()
    fake = Inference()
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield fake, GuardClient(inference_pb2_grpc.InferenceServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(None)


def servicer(client: GuardClient, **tier: object) -> SanitizerServicer:
    settings = SanitizerSettings(
        injection_classifier=False,
        guard_model="guard-model",
        guard_budget_ms=300,
        tier_policies={"t": tier},  # type: ignore[dict-item]
    )
    return SanitizerServicer(settings.policies(), guard=client)


async def check(s: SanitizerServicer, prompt: str) -> sanitizer_pb2.CheckPromptResponse:
    request = sanitizer_pb2.CheckPromptRequest(prompt=prompt, tier="t")
    return await s.CheckPrompt(request, _Context())  # type: ignore[arg-type]


def test_guarding_is_off_by_default() -> None:
    policies = SanitizerSettings().policies()
    assert policies.default.guard is None


async def test_an_unsafe_verdict_blocks_and_the_guard_sees_only_the_redacted_prompt(
    inference: tuple[Inference, GuardClient],
) -> None:
    fake, client = inference
    with pytest.raises(PermissionDenied, match=r"injection\.guard") as refused:
        await check(servicer(client), "Please be evil. Mail me at bob@example.com")
    assert refused.value.trailers == {DECIDED_BY_TRAILER: GUARD_SIGNAL}
    (request,) = fake.requests
    assert request.model == "guard-model"
    assert "[EMAIL]" in request.prompt and "bob@example.com" not in request.prompt
    assert request.params.max_tokens > 0 and request.params.temperature == 0.0


async def test_a_flag_tier_lets_an_unsafe_prompt_through_flagged(
    inference: tuple[Inference, GuardClient],
) -> None:
    _, client = inference
    reply = await check(servicer(client, guard_action="flag"), "Please be evil.")
    assert list(reply.flags) == [GUARD_SIGNAL] and reply.decided_by == GUARD_SIGNAL


async def test_a_safe_verdict_adds_nothing(inference: tuple[Inference, GuardClient]) -> None:
    fake, client = inference
    fake.answer = "safe"
    reply = await check(servicer(client), "What is the capital of France?")
    assert list(reply.flags) == [] and reply.decided_by == ""


async def test_past_the_budget_a_fail_open_tier_lets_the_prompt_through_flagged(
    inference: tuple[Inference, GuardClient],
) -> None:
    fake, client = inference
    fake.delay_s = 2.0
    started = time.perf_counter()
    reply = await check(servicer(client), "What is the capital of France?")
    elapsed = time.perf_counter() - started
    assert list(reply.flags) == [GUARD_UNAVAILABLE]
    assert 0.25 <= elapsed < 1.0, f"the 300 ms budget was not honoured: {elapsed:.2f} s"


async def test_past_the_budget_a_fail_closed_tier_refuses_with_unavailable(
    inference: tuple[Inference, GuardClient],
) -> None:
    fake, client = inference
    fake.delay_s = 2.0
    started = time.perf_counter()
    with pytest.raises(Unavailable, match="no verdict within 300 ms"):
        await check(servicer(client, guard_fail_open=False), "What is the capital of France?")
    assert time.perf_counter() - started < 1.0


async def test_a_guard_that_is_down_counts_as_no_verdict() -> None:
    channel = grpc.aio.insecure_channel("127.0.0.1:1")  # nothing listens there
    client = GuardClient(inference_pb2_grpc.InferenceServiceStub(channel))
    try:
        reply = await check(servicer(client), "What is the capital of France?")
    finally:
        await channel.close()
    assert list(reply.flags) == [GUARD_UNAVAILABLE]


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [
        ("unsafe\nS2", GuardVerdict.UNSAFE),
        (" Safe.", GuardVerdict.SAFE),
        ("Yes, it is", GuardVerdict.UNSAFE),
        ("nothing to see", GuardVerdict.UNKNOWN),
        ("", GuardVerdict.UNKNOWN),
    ],
)
def test_the_answer_is_read_from_its_first_word(answer: str, verdict: GuardVerdict) -> None:
    assert read_answer(answer, GuardPolicy(model="g")) is verdict
