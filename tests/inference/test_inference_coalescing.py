"""InferenceService.Generate sends the deltas decoded while its consumer (the router,
through Envoy) was behind as one message: same text, same finish and usage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from headrace.inference.v1 import inference_pb2
from headrace.services.inference.engine import Delta, FinishReason, Sampling
from headrace.services.inference.servicer import InferenceServicer
from headrace.types.v1 import types_pb2

TOKENS = [f"t{i} " for i in range(30)]


@dataclass
class _Spec:
    default_max_tokens: int = 64


@dataclass
class _Engine:
    """Decodes a token every millisecond, whoever reads."""

    name: str = "fake"
    spec: _Spec = field(default_factory=_Spec)

    async def generate(self, prompt: str, sampling: Sampling) -> AsyncIterator[Delta]:
        for token in TOKENS:
            yield Delta(token)
            await asyncio.sleep(0.001)
        yield Delta("", FinishReason.STOP, prompt_tokens=2, completion_tokens=len(TOKENS))


class _Registry:
    def get(self, name: str) -> _Engine:
        return _Engine()


async def test_a_slow_reader_gets_fewer_messages_with_the_same_text_and_usage() -> None:
    servicer = InferenceServicer(_Registry(), 4096)  # type: ignore[arg-type]
    messages = []
    async for message in servicer.Generate(
        inference_pb2.GenerateRequest(prompt="hi"),
        None,  # type: ignore[arg-type]
    ):
        messages.append(message)
        await asyncio.sleep(0.01)  # the router is busy
    assert len(messages) < len(TOKENS) / 2
    assert "".join(m.text for m in messages) == "".join(TOKENS)
    assert messages[-1].finish_reason == types_pb2.FINISH_REASON_STOP
    assert messages[-1].usage.completion_tokens == len(TOKENS)
    assert all(not m.finish_reason for m in messages[:-1])
