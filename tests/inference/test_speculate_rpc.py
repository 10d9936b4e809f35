"""InferenceService.Speculate on the tiny model, without a network: nothing is sent
before the commit and then what Generate sends; a request stream closed without a
commit ends ABORTED with the slot free."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from headrace.inference.v1 import inference_pb2
from headrace.services.inference.engine import LlamaEngine
from headrace.services.inference.servicer import InferenceServicer
from headrace.services.inference.settings import ModelSpec
from headrace.types.v1 import types_pb2

REQUEST = inference_pb2.GenerateRequest(
    prompt="Hello world", params=types_pb2.SamplingParams(max_tokens=10, temperature=0.0)
)


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> LlamaEngine:
    spec = ModelSpec(name="tiny-speculate-rpc", path=tiny_model, context_size=2048)
    return LlamaEngine(spec, tiny_model, slots=2, queue_size=1)


class _Registry:
    def __init__(self, engine: LlamaEngine) -> None:
        self.engine = engine

    def get(self, name: str) -> LlamaEngine:
        return self.engine


class Aborted(Exception):
    pass


class _Context:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        raise Aborted(details)


async def stream(
    queue: asyncio.Queue[inference_pb2.SpeculateRequest | None],
) -> AsyncIterator[inference_pb2.SpeculateRequest]:
    while (message := await queue.get()) is not None:
        yield message


async def until(condition: object, what: str) -> None:
    for _ in range(1000):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


def prefilled(engine: LlamaEngine) -> bool:
    return any(s.request is not None and s.request.held_token is not None for s in engine._slots)


async def test_nothing_is_sent_before_the_commit_then_what_generate_sends(
    engine: LlamaEngine,
) -> None:
    servicer = InferenceServicer(_Registry(engine), 4096)  # type: ignore[arg-type]
    plain = [m async for m in servicer.Generate(REQUEST, None)]  # type: ignore[arg-type]
    queue: asyncio.Queue[inference_pb2.SpeculateRequest | None] = asyncio.Queue()
    queue.put_nowait(inference_pb2.SpeculateRequest(request=REQUEST))
    replies = servicer.Speculate(stream(queue), _Context())  # type: ignore[arg-type]
    first = asyncio.ensure_future(anext(replies))
    await until(lambda: prefilled(engine), "prefilled")
    assert not first.done()
    queue.put_nowait(inference_pb2.SpeculateRequest(commit=True))
    queue.put_nowait(None)
    speculated = [await first] + [m async for m in replies]
    assert "".join(m.response.text for m in speculated) == "".join(m.text for m in plain)
    assert speculated[-1].response.usage == plain[-1].usage
    assert engine.held_sequences() == 0


async def test_a_request_stream_closed_without_a_commit_ends_aborted(
    engine: LlamaEngine,
) -> None:
    servicer = InferenceServicer(_Registry(engine), 4096)  # type: ignore[arg-type]
    queue: asyncio.Queue[inference_pb2.SpeculateRequest | None] = asyncio.Queue()
    queue.put_nowait(inference_pb2.SpeculateRequest(request=REQUEST))
    context = _Context()
    replies = servicer.Speculate(stream(queue), context)  # type: ignore[arg-type]
    first = asyncio.ensure_future(anext(replies))
    await until(lambda: prefilled(engine), "prefilled")
    queue.put_nowait(None)
    with pytest.raises(Aborted):
        await first
    assert context.code == grpc.StatusCode.ABORTED
    await until(lambda: engine.held_sequences() == 0 and engine._active == 0, "slot freed")


async def test_the_first_message_must_carry_the_request(engine: LlamaEngine) -> None:
    from headrace.services.runtime.errors import InvalidArgument

    servicer = InferenceServicer(_Registry(engine), 4096)  # type: ignore[arg-type]
    queue: asyncio.Queue[inference_pb2.SpeculateRequest | None] = asyncio.Queue()
    queue.put_nowait(inference_pb2.SpeculateRequest(commit=True))
    with pytest.raises(InvalidArgument):
        await anext(servicer.Speculate(stream(queue), _Context()))  # type: ignore[arg-type]
