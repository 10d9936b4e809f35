"""CheckPrompt's domain function with and without the injection classifier, in process.

The same 4 KB prompt and 10,000 deny terms as bench/sanitizer.py; the
policies run interleaved, so machine load falls on both alike. Also times the
classifier's score alone. Goal: p99 of the policy with the classifier under 1 ms.

Each call is timed twice: wall time (what a caller waits, including any time the
scheduler gives the core to another process) and the thread's CPU time (what the
code itself costs; on a shared, loaded machine the wall-time tail is the
scheduler's, and the CPU-time column is the figure that carries over).

    .venv/bin/python -m bench.injection_classifier [--model PATH]

--model times a candidate artefact too (e.g. one with static word vectors), interleaved
with the shipped one: its score alone, and the default tier with it.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from bench.sanitizer import make_prompt, make_terms
from headrace.services.sanitizer.classifier import ClassifierPolicy, load_default, load_model
from headrace.services.sanitizer.policy import PromptPolicy
from headrace.services.sanitizer.settings import SanitizerSettings

RUNS = 2_000
WARMUP = 200


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e3, ordered[int(len(ordered) * 0.99)] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="also time this trained artefact")
    args = parser.parse_args()
    rng = random.Random(7)
    prompt = make_prompt(rng)
    terms = make_terms(rng)
    common = {"max_bytes": 32 * 1024, "max_tokens_estimate": 8192, "deny_terms": terms}
    rules_only = PromptPolicy(**common)  # type: ignore[arg-type]
    with_classifier = PromptPolicy(**common, classifier=ClassifierPolicy())  # type: ignore[arg-type]
    model = load_default()
    default = SanitizerSettings().policies().default  # what CheckPrompt runs out of the box
    runs: dict[str, tuple[Callable[[], object], list[float], list[float]]] = {
        "rules only": (lambda: rules_only.evaluate(prompt), [], []),
        "rules + classifier": (lambda: with_classifier.evaluate(prompt), [], []),
        "classifier score alone": (lambda: model.score(prompt), [], []),
        "default tier (built-in rules + classifier, no deny terms)": (
            lambda: default.evaluate(prompt),
            [],
            [],
        ),
    }
    if args.model is not None:
        candidate = load_model(args.model)
        with_candidate = SanitizerSettings(injection_classifier_model=args.model).policies().default
        runs["candidate score alone"] = (lambda: candidate.score(prompt), [], [])
        runs["default tier with the candidate"] = (lambda: with_candidate.evaluate(prompt), [], [])
    for i in range(WARMUP + RUNS):
        for fn, wall, cpu in runs.values():
            started, started_cpu = time.perf_counter(), time.thread_time()
            fn()
            if i >= WARMUP:
                cpu.append(time.thread_time() - started_cpu)
                wall.append(time.perf_counter() - started)
    print(f"4 KB prompt ({len(prompt.encode())} bytes), {len(terms)} deny terms, {RUNS} runs each")
    print(f"(interleaved); load average at the end: {os.getloadavg()[0]:.1f}")
    print("| measure | wall p50 ms | wall p99 ms | CPU p50 ms | CPU p99 ms |")
    print("|---|---|---|---|---|")
    for name, (_, wall, cpu) in runs.items():
        p50, p99 = percentiles(wall)
        c50, c99 = percentiles(cpu)
        print(f"| {name} | {p50:.3f} | {p99:.3f} | {c50:.3f} | {c99:.3f} |")


if __name__ == "__main__":
    main()
