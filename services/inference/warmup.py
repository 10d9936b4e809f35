"""Warm-up before SERVING: every model and LoRA variant runs the kernels real traffic uses.

A load that succeeds proves little: llama.cpp picks its kernels (and, with extra
buffer types, repacks weights) per CPU, and a bad pick crashes at the first decode,
not at load (the AMX crash, docs/inference.md). So before the service reports
SERVING, each engine prefills a prompt of 64+ tokens (the batched prefill kernels)
and decodes a few steps on two sequences at once, one greedy and one sampled (the
batched decode and the sampler chain). A failure raises WarmupFailed naming the
model, and the process exits before it claims to be healthy; a crash (SIGSEGV) ends
the process there too, so `headrace up` reports it instead of a suite that is "up"
and answers UNAVAILABLE. The two warm-up requests per model show in the inference
metrics like any other.
"""

from __future__ import annotations

import asyncio
import time

from headrace.services.inference.engine import Delta, FinishReason, LlamaEngine, Sampling
from headrace.services.runtime.logs import get_logger

log = get_logger(__name__)

MIN_PROMPT_TOKENS = 64
DECODE_STEPS = 4

_TEXT = (
    "Headrace warms up each model before it serves: it reads this paragraph, which is "
    "long enough to take the batched prefill path of llama.cpp, and then decodes a "
    "few tokens for two sequences at once, so that the kernels real traffic uses have "
    "run once on this CPU before any client waits on them. Rivers, mountains, harbours, "
    "libraries, orchards, violins, lanterns and telescopes are ordinary words chosen so "
    "that any tokenizer splits them into many pieces. "
)


class WarmupFailed(RuntimeError):
    """A model could not prefill or decode during warm-up."""


def warmup_prompt(engine: LlamaEngine) -> str:
    """A prompt of at least MIN_PROMPT_TOKENS tokens that fits the model's context."""
    budget = engine.context_size - DECODE_STEPS - 8
    prompt = _TEXT
    while len(engine.tokenize(prompt)) < MIN_PROMPT_TOKENS:
        prompt += _TEXT
    tokens = engine.tokenize(prompt)
    if len(tokens) > budget:
        # A tiny context (tests): as many words as fit.
        words = prompt.split()
        while words and len(engine.tokenize(" ".join(words))) > budget:
            words = words[: len(words) * 3 // 4]
        prompt = " ".join(words)
    return prompt


async def _run(engine: LlamaEngine, prompt: str, sampling: Sampling) -> Delta:
    last: Delta | None = None
    async for delta in engine.generate(prompt, sampling):
        last = delta
    if last is None or last.finish_reason not in (FinishReason.STOP, FinishReason.LENGTH):
        raise WarmupFailed(f"generation ended with {last.finish_reason if last else 'nothing'}")
    return last


async def warm_up_engine(engine: LlamaEngine, timeout_s: float) -> float:
    """Prefill 64+ tokens and decode DECODE_STEPS steps on two sequences; seconds taken."""
    started = time.perf_counter()
    prompt = warmup_prompt(engine)
    greedy = Sampling(max_tokens=DECODE_STEPS, temperature=0.0)
    sampled = Sampling(max_tokens=DECODE_STEPS, temperature=0.8, seed=1)
    async with asyncio.timeout(timeout_s):
        if engine.slots >= 2:
            # Two prompts differing at the end: both prefill, and they decode in one batch.
            await asyncio.gather(
                _run(engine, prompt + "One", greedy), _run(engine, prompt + "Two", sampled)
            )
        else:  # one slot (and maybe no queue): no batch of two exists to warm up
            await _run(engine, prompt + "One", greedy)
            await _run(engine, prompt + "Two", sampled)
    return time.perf_counter() - started


async def warm_up(engines: dict[str, LlamaEngine], timeout_s: float = 120.0) -> None:
    """Warm up every engine in turn; WarmupFailed (logged as warmup_failed) on the first
    that fails, naming it."""
    for name, engine in engines.items():
        try:
            seconds = await warm_up_engine(engine, timeout_s)
        except Exception as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else f"{exc}"
            log.error("warmup_failed", model=name, error=reason, error_type=type(exc).__name__)
            raise WarmupFailed(
                f"model {name!r} failed its warm-up (prefill of {MIN_PROMPT_TOKENS}+ tokens, "
                f"batched decode of 2 sequences): {reason}; run `headrace doctor`"
            ) from exc
        log.info("warmup_done", model=name, seconds=round(seconds, 3))
