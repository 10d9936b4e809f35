"""Held (speculative) generations on a tiny real GGUF: prefilled at once, nothing out
before the commit, the same text after it; a cancel frees the slot and clears the
cells the speculation wrote; a hold never queues and yields its slot to a checked
request."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from headrace.services.inference.engine import (
    Delta,
    Hold,
    LlamaEngine,
    Sampling,
    SpeculationDropped,
)
from headrace.services.inference.settings import ModelSpec
from headrace.services.runtime.errors import ResourceExhausted

PROMPT = "Hello world"
GREEDY = Sampling(max_tokens=12, temperature=0.0)
REUSED = "headrace_inference_prefix_reused_tokens_total"


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> LlamaEngine:
    spec = ModelSpec(name="tiny-speculation", path=tiny_model, context_size=2048)
    return LlamaEngine(spec, tiny_model, slots=1, queue_size=1)


@contextlib.contextmanager
def own_engine(model: Path, name: str, *, slots: int, queue_size: int) -> Iterator[LlamaEngine]:
    """An engine of the test's own, closed after it."""
    spec = ModelSpec(name=name, path=model, context_size=2048)
    engine = LlamaEngine(spec, model, slots=slots, queue_size=queue_size)
    try:
        yield engine
    finally:
        engine.close()


def text_of(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


def prefilled(engine: LlamaEngine) -> bool:
    request = engine._slots[0].request
    return request is not None and request.held_token is not None


def idle(engine: LlamaEngine) -> bool:
    return engine._slots[0].request is None and engine.held_sequences() == 0


async def test_nothing_leaves_before_the_commit_and_then_the_same_text(
    engine: LlamaEngine,
) -> None:
    plain = text_of([d async for d in engine.generate(PROMPT, GREEDY)])
    hold = Hold()
    stream = engine.generate(PROMPT, GREEDY, hold)
    first = asyncio.ensure_future(anext(stream))
    await until(lambda: prefilled(engine), "prefilled and its first token sampled")
    for _ in range(20):  # the decode thread has had steps to spare
        await asyncio.sleep(0.005)
    assert not first.done(), "a held generation streamed before its commit"
    assert engine.held_sequences() == 1
    assert engine._slots[0].request.generated == 0  # type: ignore[union-attr]
    hold.commit()
    deltas = [await first] + [d async for d in stream]
    assert text_of(deltas) == plain
    assert engine.held_sequences() == 0


async def test_a_cancel_frees_the_slot_and_clears_the_speculated_cells(
    engine: LlamaEngine,
) -> None:
    [d async for d in engine.generate(PROMPT, GREEDY)]
    slot = engine._slots[0]
    hold = Hold()
    unchecked = PROMPT + " and a secret nobody checked yet"
    stream = engine.generate(unchecked, GREEDY, hold)
    first = asyncio.ensure_future(anext(stream))
    await until(lambda: prefilled(engine), "prefilled")
    kept = slot.request.kept  # type: ignore[union-attr]
    assert kept > 0, "the checked prompt's prefix was reused"
    hold.cancel()
    with pytest.raises(SpeculationDropped):
        await first
    await until(lambda: idle(engine), "the slot freed")
    assert len(slot.cached) == kept, "the speculated prompt's cells stayed as a cached prefix"
    assert slot.cached == engine.tokenize(unchecked)[:kept]


async def test_closing_the_stream_before_the_commit_drops_it(engine: LlamaEngine) -> None:
    hold = Hold()
    stream = engine.generate(PROMPT, GREEDY, hold)
    first = asyncio.ensure_future(anext(stream))
    await until(lambda: prefilled(engine), "prefilled")
    first.cancel()  # the router went away: the call is cancelled
    with pytest.raises(asyncio.CancelledError):
        await first
    await stream.aclose()
    await until(lambda: idle(engine), "the slot freed")


async def test_a_hold_never_queues_and_gives_its_slot_to_a_checked_request(
    engine: LlamaEngine,
) -> None:
    hold = Hold()
    held = engine.generate(PROMPT, GREEDY, hold)
    first = asyncio.ensure_future(anext(held))
    await until(lambda: prefilled(engine), "prefilled")
    with pytest.raises(ResourceExhausted):
        await anext(engine.generate(PROMPT, GREEDY, Hold()))
    checked = text_of([d async for d in engine.generate(PROMPT, GREEDY)])
    assert checked, "the checked request was served in the held one's slot"
    with pytest.raises(SpeculationDropped):
        await first
    assert idle(engine)


async def test_a_full_queue_still_admits_a_checked_request_in_a_held_slot(
    tiny_model: Path,
) -> None:
    with own_engine(tiny_model, "tiny-speculation-noqueue", slots=1, queue_size=0) as engine:
        held = engine.generate(PROMPT, GREEDY, Hold())
        first = asyncio.ensure_future(anext(held))
        await until(lambda: prefilled(engine), "prefilled")
        checked = text_of([d async for d in engine.generate(PROMPT, GREEDY)])
        assert checked, "refused as busy while only a speculation held the slot"
        with pytest.raises(SpeculationDropped):
            await first


async def test_an_unchecked_speculation_is_never_shared_into_another_slot(
    tiny_model: Path,
) -> None:
    # Two slots: a checked request with the same prompt as a held (unchecked) one
    # may share only what was checked before it, never the speculation's own cells.
    with own_engine(tiny_model, "tiny-speculation-2", slots=2, queue_size=1) as two:
        [d async for d in two.generate(PROMPT, GREEDY)]
        unchecked = PROMPT + " and a secret nobody checked yet, with more words after it"
        hold = Hold()
        held = two.generate(unchecked, GREEDY, hold)
        first = asyncio.ensure_future(anext(held))
        await until(
            lambda: any(s.request is not None and s.request.held_token for s in two._slots),
            "prefilled",
        )
        kept = next(s.request.kept for s in two._slots if s.request is not None)
        assert 0 < kept < len(two.tokenize(unchecked)) - 1
        labels = {"model": two.name}
        before = REGISTRY.get_sample_value(REUSED, labels) or 0.0
        deltas = [d async for d in two.generate(unchecked, GREEDY)]
        assert deltas[-1].finish_reason is not None
        # The held slot holds the whole prompt's cells, but they were never checked:
        # only the first request's prefix may be reused.
        assert (REGISTRY.get_sample_value(REUSED, labels) or 0.0) - before <= kept
        hold.cancel()
        with pytest.raises(SpeculationDropped):
            await first
