"""The engine's own first token against llama-cpp-python in the same process.

`python -m bench.first_token [--pairs N]`: alternating pairs, one process, the
default model, greedy, fresh prompts that share a prefix (as users' requests do),
each side with its own copy of the weights and the same threads. Prints the
medians of the time to the first token and of the engine's part that is not
llama.cpp's (tokenize + queue + hand-over), so a gap can be placed. Short by design
(a few seconds of decoding): run it on a quiet machine; on a shared one compare
only numbers from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from pathlib import Path

from headrace.services.inference.engine import LlamaEngine, Sampling
from headrace.services.inference.registry import resolve_path
from headrace.services.inference.settings import DEFAULT_MODEL
from headrace.services.runtime.llama_params import load_llama

PREFIX = "You are a helpful assistant. Answer briefly. Question number "


def prompt() -> str:
    return f"{PREFIX}{uuid.uuid4().hex[:8]}: what is a lighthouse?"


def in_process_first(llm: object, text: str) -> float:
    started = time.perf_counter()
    for _chunk in llm.create_completion(text, max_tokens=2, temperature=0.0, stream=True):  # type: ignore[attr-defined]
        return time.perf_counter() - started
    return float("nan")


async def engine_first(engine: LlamaEngine, text: str) -> float:
    started = time.perf_counter()
    async for delta in engine.generate(text, Sampling(max_tokens=2, temperature=0.0)):
        if delta.text or delta.finish_reason is not None:
            elapsed = time.perf_counter() - started
            break
    return elapsed


async def compare(model: Path, args: argparse.Namespace) -> None:
    threads = os.cpu_count() or 1
    spec = DEFAULT_MODEL.model_copy(update={"path": model, "threads": threads})
    engine = LlamaEngine(spec, model, slots=args.slots, queue_size=4)
    llm = load_llama(model, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    try:
        for _ in range(3):  # warm both
            in_process_first(llm, prompt())
            await engine_first(engine, prompt())
        ours, theirs = [], []
        for _ in range(args.pairs):
            theirs.append(in_process_first(llm, prompt()))
            ours.append(await engine_first(engine, prompt()))
        med_ours, med_theirs = statistics.median(ours), statistics.median(theirs)
        print(
            f"first token, median of {args.pairs} pairs ({threads} threads, {args.slots} slots): "
            f"engine {med_ours * 1000:.1f} ms, in-process {med_theirs * 1000:.1f} ms, "
            f"gap {(med_ours - med_theirs) * 1000:+.1f} ms"
        )
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(compare(resolve_path(DEFAULT_MODEL, Path(".headrace").resolve()), args))


if __name__ == "__main__":
    main()
