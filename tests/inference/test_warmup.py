"""Warm-up before SERVING: a 64+ token prefill and a batched decode of two sequences per
model; a model that fails it is named and the service never reports SERVING."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from headrace.services.inference.engine import Delta, LlamaEngine, Sampling
from headrace.services.inference.settings import ModelSpec
from headrace.services.inference.warmup import (
    MIN_PROMPT_TOKENS,
    WarmupFailed,
    warm_up,
    warmup_prompt,
)


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> LlamaEngine:
    spec = ModelSpec(name="tiny-warmup", path=tiny_model, context_size=4096)
    return LlamaEngine(spec, tiny_model, slots=2, queue_size=2)


def _batches_of(model: str, size: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "headrace_inference_batch_size_bucket", {"model": model, "le": size}
        )
        or 0.0
    )


async def test_warm_up_prefills_64_tokens_and_decodes_two_sequences_in_one_batch(
    engine: LlamaEngine,
) -> None:
    assert len(engine.tokenize(warmup_prompt(engine))) >= MIN_PROMPT_TOKENS
    batched_before = _batches_of(engine.name, "+Inf") - _batches_of(engine.name, "1.0")
    requests = "headrace_inference_requests_total"
    done_before = (
        REGISTRY.get_sample_value(requests, {"model": engine.name, "finish_reason": "length"})
        or 0.0
    )
    await warm_up({engine.name: engine}, timeout_s=60)
    batched = _batches_of(engine.name, "+Inf") - _batches_of(engine.name, "1.0")
    assert batched > batched_before, "some decode step sampled both sequences together"
    done = REGISTRY.get_sample_value(requests, {"model": engine.name, "finish_reason": "length"})
    assert (done or 0.0) - done_before == 2


def test_the_warm_up_prompt_fits_a_small_context(tiny_model: Path) -> None:
    spec = ModelSpec(name="tiny-small-ctx", path=tiny_model, context_size=64)
    small = LlamaEngine(spec, tiny_model, slots=1, queue_size=1)
    try:
        assert 0 < len(small.tokenize(warmup_prompt(small))) <= small.context_size - 4
    finally:
        small.close()


async def test_warm_up_runs_on_a_single_slot_without_a_queue(tiny_model: Path) -> None:
    spec = ModelSpec(name="tiny-one-slot", path=tiny_model, context_size=1024)
    single = LlamaEngine(spec, tiny_model, slots=1, queue_size=0)
    try:
        await warm_up({single.name: single}, timeout_s=60)
    finally:
        single.close()


class _BrokenEngine:
    """An engine whose decode fails, as a broken build or model would."""

    name = "broken"
    context_size = 4096
    slots = 2

    def tokenize(self, text: str) -> list[int]:
        return list(range(len(text.split())))

    async def generate(self, prompt: str, sampling: Sampling) -> AsyncIterator[Delta]:
        raise RuntimeError("llama_decode returned -3")
        yield  # pragma: no cover


class _StuckEngine(_BrokenEngine):
    name = "stuck"

    async def generate(self, prompt: str, sampling: Sampling) -> AsyncIterator[Delta]:
        import asyncio

        await asyncio.sleep(3600)
        yield  # pragma: no cover


async def test_a_model_that_fails_its_warm_up_is_named_with_what_failed(
    engine: LlamaEngine,
) -> None:
    engines = {engine.name: engine, "broken": _BrokenEngine()}
    with pytest.raises(WarmupFailed, match=r"model 'broken'.*llama_decode returned -3"):
        await warm_up(engines, timeout_s=30)  # type: ignore[arg-type]


async def test_a_model_whose_warm_up_hangs_fails_after_the_timeout() -> None:
    with pytest.raises(WarmupFailed, match=r"model 'stuck'.*timed out"):
        await warm_up({"stuck": _StuckEngine()}, timeout_s=0.2)  # type: ignore[dict-item]
