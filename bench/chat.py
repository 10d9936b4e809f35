"""`python -m bench.chat [--rounds N]`: what conversations and structured output cost,
on the engine that serves them (the default model, in this process, 2 slots).

1. Grammar cost to the batch: aggregate tokens/s of two unconstrained streams against
   one JSON-Schema-constrained + one unconstrained stream, alternating rounds with fresh
   prompts so machine noise hits both alike. The constrained stream is checked token by
   token; the vocabulary (262k entries) is masked only when the grammar rejects a pick.
2. Multi-turn reuse: first-token time of turn 5 of a conversation right after turn 4
   (its history's KV cells are in a slot) against the same turn 5 with a history the
   engine has never seen (nothing reused).

Prints medians and ratios; docs/benchmarks.md keeps the figures with this command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from pathlib import Path

from headrace.services.inference.engine import LlamaEngine, Sampling
from headrace.services.inference.registry import resolve_path
from headrace.services.inference.settings import DEFAULT_MODEL
from headrace.services.inference.structured import schema_grammar

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "city": {"type": "string", "maxLength": 40},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 30}},
    },
    "required": ["name", "age", "city", "hobbies"],
    "additionalProperties": False,
}
TOKENS = 64


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def stream(engine: LlamaEngine, chat: list[dict[str, str]], sampling: Sampling) -> tuple:
    """(seconds to the first text, tokens, text) of one reply."""
    started = time.perf_counter()
    first = 0.0
    text = []
    tokens = 0
    async for delta in engine.generate(chat, sampling):
        if delta.text and not first:
            first = time.perf_counter() - started
        text.append(delta.text)
        if delta.finish_reason is not None:
            tokens = delta.completion_tokens
    return first, tokens, "".join(text)


async def pair(engine: LlamaEngine, constrained: bool) -> float:
    """Aggregate tokens/s of two streams decoded together."""
    tag = uuid.uuid4().hex[:8]
    free = Sampling(max_tokens=TOKENS, temperature=0.0)
    grammar = schema_grammar(json.dumps(SCHEMA)) if constrained else None
    other = Sampling(max_tokens=TOKENS, temperature=0.0, grammar=grammar)
    started = time.perf_counter()
    results = await asyncio.gather(
        stream(engine, user(f"Write a story about a lighthouse ({tag})."), free),
        stream(engine, user(f"Describe a person as JSON: name, age, city ({tag})."), other),
    )
    return sum(r[1] for r in results) / (time.perf_counter() - started)


async def turn_five(engine: LlamaEngine, reuse: bool) -> float:
    """First-text seconds of turn 5; with reuse, turns 1-4 were just answered."""
    tag = uuid.uuid4().hex[:8]
    chat = [{"role": "system", "content": f"You are a patient history teacher ({tag})."}]
    questions = [
        "Who built the pyramids of Giza?",
        "How long did that take?",
        "What tools did they use?",
        "Where did the stone come from?",
        "How were the blocks moved?",
    ]
    sampling = Sampling(max_tokens=24, temperature=0.0)
    for question in questions[:4]:
        chat.append({"role": "user", "content": question})
        if reuse:
            _, _, reply = await stream(engine, chat, sampling)
        else:  # a plausible reply the engine never produced: nothing to reuse
            reply = f"A good question about {question.lower().rstrip('?')}; here is the answer."
        chat.append({"role": "assistant", "content": reply})
    chat.append({"role": "user", "content": questions[4]})
    first, _, _ = await stream(engine, chat, Sampling(max_tokens=4, temperature=0.0))
    return first


async def main(path: Path, rounds: int) -> None:
    engine = LlamaEngine(DEFAULT_MODEL, path, slots=2, queue_size=4)
    print(f"model {path.name}, {os.cpu_count()} threads, 2 slots, {rounds} rounds")
    await pair(engine, constrained=False)  # warm up both paths
    await pair(engine, constrained=True)
    free, mixed = [], []
    for _ in range(rounds):
        free.append(await pair(engine, constrained=False))
        mixed.append(await pair(engine, constrained=True))
    f, m = statistics.median(free), statistics.median(mixed)
    print(f"two unconstrained streams: {f:.1f} tok/s aggregate (median)")
    print(f"constrained + unconstrained: {m:.1f} tok/s aggregate (median), ratio {m / f:.3f}")
    warm, cold = [], []
    for _ in range(rounds):
        warm.append(await turn_five(engine, reuse=True))
        cold.append(await turn_five(engine, reuse=False))
    w, c = statistics.median(warm) * 1000, statistics.median(cold) * 1000
    print(f"turn 5 first text: {w:.1f} ms with reuse, {c:.1f} ms without (median)")
    engine.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    model = resolve_path(DEFAULT_MODEL, Path(".headrace").resolve())
    asyncio.run(main(model, parser.parse_args().rounds))
