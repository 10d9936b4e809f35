"""Backpressure in the engine: a stream whose consumer stops reading pauses at the mark.

A slow client must cost a bounded buffer, not a sequence decoded to the end into
memory, and must not slow the sequences decoding beside it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, aclosing
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from headrace.services.inference.engine import Delta, FinishReason, LlamaEngine, Sampling
from headrace.services.inference.settings import ModelSpec

MARK = 8
LONG = Sampling(max_tokens=400, temperature=0.0)


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Iterator[LlamaEngine]:
    spec = ModelSpec(name="tiny-backpressure", path=tiny_model, context_size=4096)
    engine = LlamaEngine(spec, tiny_model, slots=2, queue_size=2, stream_buffer=MARK)
    yield engine
    engine.close()


def sample(name: str, engine: LlamaEngine) -> float:
    return REGISTRY.get_sample_value(name, {"model": engine.name}) or 0.0


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def decode_thread_cpu_ticks(engine: LlamaEngine) -> int:
    """utime + stime of the engine's decode thread, in clock ticks (Linux)."""
    with open(f"/proc/self/task/{engine._thread.native_id}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def drain(stream: AsyncIterator[Delta]) -> list[Delta]:
    return [d async for d in stream]


async def paused_reader(
    stack: AsyncExitStack, engine: LlamaEngine, prompt: str
) -> AsyncIterator[Delta]:
    """A stream whose reader took one delta and stopped; closed when the test ends,
    pass or fail, so a failure never leaves a slot held for the next test."""
    stream = await stack.enter_async_context(aclosing(engine.generate(prompt, LONG)))
    first = await asyncio.wait_for(anext(stream), timeout=10)
    assert first.text
    return stream


async def test_a_stream_nobody_reads_stops_at_the_mark_while_another_finishes(
    engine: LlamaEngine,
) -> None:
    async with AsyncExitStack() as stack:
        slow = await paused_reader(stack, engine, "Hello world")
        await until(lambda: engine.paused_sequences() == 1)
        # At most MARK deltas wait for the reader (one fewer when the pause came
        # just before the first was taken), and no more pile up while it is paused.
        assert MARK - 1 <= engine.undelivered_deltas() <= MARK
        assert sample("headrace_inference_paused_sequences", engine) == 1
        assert MARK - 1 <= sample("headrace_inference_undelivered_deltas", engine) <= MARK

        other = await asyncio.wait_for(
            drain(engine.generate("The other prompt", Sampling(max_tokens=300, temperature=0.0))),
            timeout=20,
        )
        assert other[-1].finish_reason is FinishReason.LENGTH
        assert other[-1].completion_tokens == 300
        assert engine.undelivered_deltas() <= MARK, "the paused sequence ran ahead of its reader"
        assert engine.paused_sequences() == 1

        # The slow client reads on and gets the whole answer.
        rest = await asyncio.wait_for(drain(slow), timeout=20)
    assert rest[-1].finish_reason is FinishReason.LENGTH
    assert rest[-1].completion_tokens == LONG.max_tokens
    assert engine.paused_sequences() == 0
    assert engine.undelivered_deltas() == 0


async def test_a_paused_engine_sleeps_instead_of_spinning(engine: LlamaEngine) -> None:
    async with AsyncExitStack() as stack:
        await paused_reader(stack, engine, "Hello world")
        await until(lambda: engine.paused_sequences() == 1)
        decodes = sample("headrace_inference_batch_size_count", engine)
        ticks = decode_thread_cpu_ticks(engine)
        await asyncio.sleep(0.5)
        assert sample("headrace_inference_batch_size_count", engine) == decodes
        # Spinning for 0.5 s would be ~50 ticks; a sleeping thread uses none.
        assert decode_thread_cpu_ticks(engine) - ticks <= os.sysconf("SC_CLK_TCK") // 20


async def test_cancelling_a_paused_stream_frees_its_slot_at_once(engine: LlamaEngine) -> None:
    async with AsyncExitStack() as stack:
        # Both slots paused, a third request waiting for one.
        first = await paused_reader(stack, engine, "first slow reader")
        second = await paused_reader(stack, engine, "second slow reader")
        await until(lambda: engine.paused_sequences() == 2)
        waiting = asyncio.ensure_future(
            drain(engine.generate("waits for a slot", Sampling(max_tokens=20, temperature=0.0)))
        )
        stack.callback(waiting.cancel)
        await asyncio.sleep(0.2)
        assert not waiting.done(), "no slot should be free while both are paused"

        started = time.monotonic()
        await first.aclose()  # type: ignore[attr-defined]
        done = await asyncio.wait_for(waiting, timeout=5)
        assert done[-1].completion_tokens == 20
        assert time.monotonic() - started < 2.0

        # A deadline ends a paused stream the same way: the RPC is cancelled,
        # which closes the stream.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await asyncio.sleep(1.0)
                await drain(second)
        await second.aclose()  # type: ignore[attr-defined]
        await until(lambda: engine.paused_sequences() == 0 and engine.undelivered_deltas() == 0)
