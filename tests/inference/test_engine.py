"""LlamaEngine on a tiny real GGUF: streaming, stop strings, seeds, cancellation, admission."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from headrace.services.inference.engine import Delta, FinishReason, LlamaEngine, Sampling
from headrace.services.inference.settings import ModelSpec
from headrace.services.runtime.errors import InvalidArgument, ResourceExhausted
from headrace.services.runtime.llama_params import load_llama

PROMPT = "Hello world"


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> LlamaEngine:
    spec = ModelSpec(name="tiny-engine", path=tiny_model, context_size=4096)
    return LlamaEngine(spec, tiny_model, slots=1, queue_size=1)


async def collect(engine: LlamaEngine, prompt: str, sampling: Sampling) -> list[Delta]:
    return [d async for d in engine.generate(prompt, sampling)]


def text_of(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_tokens_stream_as_separate_deltas_with_usage_on_the_last(engine: LlamaEngine) -> None:
    deltas = await collect(engine, PROMPT, Sampling(max_tokens=16, temperature=0.0))
    assert sum(1 for d in deltas if d.text) >= 3
    assert all(d.finish_reason is None for d in deltas[:-1])
    last = deltas[-1]
    assert last.finish_reason is FinishReason.LENGTH
    assert last.completion_tokens == 16
    assert last.prompt_tokens == len(engine.tokenize(PROMPT))


async def test_greedy_decoding_repeats(engine: LlamaEngine) -> None:
    a = text_of(await collect(engine, PROMPT, Sampling(max_tokens=24, temperature=0.0)))
    b = text_of(await collect(engine, PROMPT, Sampling(max_tokens=24, temperature=0.0)))
    assert a == b and a


async def test_same_seed_same_sample(engine: LlamaEngine) -> None:
    sampling = Sampling(max_tokens=24, temperature=1.0, seed=1234)
    a = text_of(await collect(engine, PROMPT, sampling))
    b = text_of(await collect(engine, PROMPT, sampling))
    assert a == b


async def test_stop_string_ends_the_stream_and_is_not_echoed(engine: LlamaEngine) -> None:
    full = text_of(await collect(engine, PROMPT, Sampling(max_tokens=48, temperature=0.0)))
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip(), f"test needs a visible stop string, got {stop!r} from {full!r}"
    deltas = await collect(engine, PROMPT, Sampling(max_tokens=48, temperature=0.0, stop=(stop,)))
    text = text_of(deltas)
    assert stop not in text
    assert text == full[: full.index(stop)]
    assert deltas[-1].finish_reason is FinishReason.STOP


async def test_prompt_longer_than_context_is_invalid_argument(engine: LlamaEngine) -> None:
    with pytest.raises(InvalidArgument, match="context"):
        await collect(engine, "word " * 5000, Sampling(max_tokens=4))


async def test_cancelled_stream_frees_its_slot_and_is_counted(engine: LlamaEngine) -> None:
    before = metric("headrace_inference_cancellations_total", model=engine.name)
    stream = engine.generate(PROMPT, Sampling(max_tokens=4000, temperature=0.0))
    got = [await anext(stream) for _ in range(3)]
    assert all(d.finish_reason is None for d in got)
    started = time.perf_counter()
    await stream.aclose()  # what a client cancel does to the servicer's generator
    deltas = await collect(engine, PROMPT, Sampling(max_tokens=2, temperature=0.0))
    assert deltas[-1].finish_reason is FinishReason.LENGTH
    assert time.perf_counter() - started < 2.0, "the next request started at once"
    assert metric("headrace_inference_cancellations_total", model=engine.name) == before + 1
    assert metric("headrace_inference_busy_slots", model=engine.name) == 0


async def test_requests_beyond_slot_and_queue_are_refused_at_once(engine: LlamaEngine) -> None:
    # queue_size=1: one decoding, one waiting, the third is refused immediately.
    long = Sampling(max_tokens=4000, temperature=0.0)
    running = engine.generate(PROMPT, long)
    await anext(running)
    waiting = asyncio.create_task(collect(engine, PROMPT, Sampling(max_tokens=2)))
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    with pytest.raises(ResourceExhausted) as info:
        await collect(engine, PROMPT, Sampling(max_tokens=2))
    assert time.perf_counter() - started < 0.5
    assert info.value.retry_after_s
    await running.aclose()
    assert (await waiting)[-1].finish_reason is FinishReason.LENGTH


def test_model_revision_tells_model_files_apart(tiny_model: Path, tmp_path: Path) -> None:
    from headrace.services.inference.engine import model_revision

    copy = tmp_path / "copy.gguf"
    copy.write_bytes(tiny_model.read_bytes())
    assert model_revision(copy) == model_revision(tiny_model)
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    assert model_revision(copy) != model_revision(tiny_model)


async def test_multi_byte_characters_from_byte_tokens_arrive_whole(engine: LlamaEngine) -> None:
    # The tiny model spells é and → with byte-fallback tokens (two or three per
    # character); each must leave the engine as one whole character.
    deltas = await collect(engine, PROMPT, Sampling(max_tokens=64, temperature=0.0))
    text = text_of(deltas)
    assert any(ch in text for ch in "é→"), text
    assert "\ufffd" not in text
    for delta in deltas:
        delta.text.encode("utf-8")  # every delta is valid UTF-8 on its own


async def test_repeat_penalty_changes_greedy_output(engine: LlamaEngine) -> None:
    plain = text_of(await collect(engine, PROMPT, Sampling(max_tokens=48, temperature=0.0)))
    penalised = text_of(
        await collect(engine, PROMPT, Sampling(max_tokens=48, temperature=0.0, repeat_penalty=1.8))
    )
    assert plain != penalised


async def test_top_k_one_is_greedy_at_any_temperature(engine: LlamaEngine) -> None:
    greedy = text_of(await collect(engine, PROMPT, Sampling(max_tokens=24, temperature=0.0)))
    top1 = text_of(
        await collect(engine, PROMPT, Sampling(max_tokens=24, temperature=1.5, top_k=1, seed=3))
    )
    assert top1 == greedy


async def test_a_failed_decode_is_counted_as_an_error_not_a_cancellation(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = LlamaEngine(ModelSpec(name="failing", path=str(tiny_model)), tiny_model, 1, 1)
    try:

        def broken_step() -> bool:
            raise RuntimeError("llama_decode returned -1")

        monkeypatch.setattr(engine, "_step", broken_step)
        before = metric("headrace_inference_requests_total", model="failing", finish_reason="error")
        with pytest.raises(RuntimeError, match="llama_decode"):
            await collect(engine, "Hello", Sampling(max_tokens=4))
        assert (
            metric("headrace_inference_requests_total", model="failing", finish_reason="error")
            == before + 1
        )
        assert metric("headrace_inference_cancellations_total", model="failing") == 0
    finally:
        engine.close()


async def test_greedy_decoding_picks_the_tokens_llama_cpps_greedy_sampler_picks(
    engine: LlamaEngine, tiny_model: Path
) -> None:
    # The engine reads the highest logit itself; llama-cpp-python's own greedy
    # completion (llama.cpp's greedy sampler) is the reference.
    llm = load_llama(tiny_model, n_ctx=256, verbose=False)
    try:
        reference = llm.create_completion(PROMPT, max_tokens=32, temperature=0.0)
    finally:
        llm.close()
    ours = await collect(engine, PROMPT, Sampling(max_tokens=32, temperature=0.0))
    assert text_of(ours) == reference["choices"][0]["text"]
    assert ours[-1].completion_tokens == reference["usage"]["completion_tokens"]


async def test_greedy_decoding_skips_llama_cpps_sampler_chain(
    engine: LlamaEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Building the chain's candidate list costs ~0.4 ms a token for a 262k vocabulary.
    import llama_cpp

    calls = 0
    original = llama_cpp.llama_sampler_sample

    def counting(*args: object) -> int:
        nonlocal calls
        calls += 1
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(llama_cpp, "llama_sampler_sample", counting)
    await collect(engine, PROMPT, Sampling(max_tokens=8, temperature=0.0))
    assert calls == 0
    await collect(engine, PROMPT, Sampling(max_tokens=8, temperature=0.0, repeat_penalty=1.3))
    await collect(engine, PROMPT, Sampling(max_tokens=8, temperature=0.7, seed=1))
    assert calls == 16, "a penalty or a temperature still samples through the chain"


async def test_decode_threads_run_at_a_lower_cpu_priority_than_the_service(
    engine: LlamaEngine,
) -> None:
    import os
    import threading

    await collect(engine, PROMPT, Sampling(max_tokens=2, temperature=0.0))
    service = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    decode = os.getpriority(os.PRIO_PROCESS, engine.decode_thread_id)
    assert engine.spec.decode_nice == 5
    assert decode == min(service + 5, 19)
