"""CheckPrompt's domain function with and without the injection classifier, in process.

The same 4 KB prompt and 10,000 deny terms as bench/sanitizer.py; the two
policies run interleaved, so machine load falls on both alike. Also times the
classifier's score alone. Goal: p99 of the policy with the classifier under 1 ms.

    .venv/bin/python -m bench.injection_classifier
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable

from bench.sanitizer import make_prompt, make_terms
from headrace.services.sanitizer.classifier import ClassifierPolicy, load_default
from headrace.services.sanitizer.policy import PromptPolicy

RUNS = 2_000
WARMUP = 200


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e3, ordered[int(len(ordered) * 0.99)] * 1e3


def main() -> None:
    rng = random.Random(7)
    prompt = make_prompt(rng)
    terms = make_terms(rng)
    common = {"max_bytes": 32 * 1024, "max_tokens_estimate": 8192, "deny_terms": terms}
    rules_only = PromptPolicy(**common)  # type: ignore[arg-type]
    with_classifier = PromptPolicy(**common, classifier=ClassifierPolicy())  # type: ignore[arg-type]
    model = load_default()
    runs: dict[str, tuple[Callable[[], object], list[float]]] = {
        "rules only": (lambda: rules_only.evaluate(prompt), []),
        "rules + classifier": (lambda: with_classifier.evaluate(prompt), []),
        "classifier score alone": (lambda: model.score(prompt), []),
    }
    for i in range(WARMUP + RUNS):
        for fn, samples in runs.values():
            started = time.perf_counter()
            fn()
            if i >= WARMUP:
                samples.append(time.perf_counter() - started)
    print(f"4 KB prompt, {len(terms)} deny terms, {RUNS} runs each (interleaved)")
    print("| measure | p50 ms | p99 ms |")
    print("|---|---|---|")
    for name, (_, samples) in runs.items():
        p50, p99 = percentiles(samples)
        print(f"| {name} | {p50:.3f} | {p99:.3f} |")


if __name__ == "__main__":
    main()
