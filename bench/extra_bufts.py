"""`python -m bench.extra_bufts [GGUF]`: llama.cpp's extra buffer types on vs off on this
CPU, side by side (alternating rounds, fresh prompts): first token and decode rate of
greedy completions through llama-cpp-python in process. On AMX CPUs `on` crashes the
default model (docs/inference.md), so there only `off` runs; elsewhere it tells whether
`auto`'s choice of `on` pays on this CPU."""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

from headrace.services.inference.registry import resolve_path
from headrace.services.inference.settings import DEFAULT_MODEL
from headrace.services.runtime.llama_params import choose_extra_bufts, load_llama

ROUNDS = 8
MAX_TOKENS = 64


def one(llm, prompt: str) -> tuple[float, float]:
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    for _chunk in llm.create_completion(
        prompt, max_tokens=MAX_TOKENS, temperature=0.0, stream=True
    ):
        tokens += 1
        if not first:
            first = time.perf_counter()
    end = time.perf_counter()
    return (first - started) * 1000, (tokens - 1) / (end - first) if tokens > 1 else 0.0


def main() -> None:
    path = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else resolve_path(DEFAULT_MODEL, Path(".headrace").resolve())
    )
    threads = os.cpu_count() or 1
    auto = choose_extra_bufts("auto")
    print(
        f"model {path.name}, {threads} threads; auto here: {'on' if auto.enabled else 'off'} ({auto.reason})"
    )
    settings = ["off"] + (["on"] if auto.enabled else [])
    llms = {
        s: load_llama(path, extra_bufts=s, n_ctx=1024, n_threads=threads, verbose=False)
        for s in settings
    }
    results: dict[str, list[tuple[float, float]]] = {s: [] for s in settings}
    for r in range(ROUNDS + 1):
        for s in settings:
            prompt = f"Round {r} of the {s} test. Write a short story about a lighthouse keeper number {r * 7 + len(s)}."
            ttft, rate = one(llms[s], prompt)
            if r:  # round 0 warms up
                results[s].append((ttft, rate))
    for s in settings:
        ttfts = [t for t, _ in results[s]]
        rates = [x for _, x in results[s]]
        print(
            f"extra buffer types {s:>3}: first token median {statistics.median(ttfts):6.1f} ms, "
            f"decode median {statistics.median(rates):5.1f} tok/s ({ROUNDS} rounds)"
        )


if __name__ == "__main__":
    main()
