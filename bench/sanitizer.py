"""CheckPrompt's domain function in process: a 4 KB prompt against 10,000 deny terms.

Measures PromptPolicy.evaluate (normalise, limits, one Aho-Corasick pass over
the deny terms, the injection rules on the skeleton, the redaction rules) with
the default settings plus 10,000 deny terms, none of which occur in the prompt,
so every rule runs to the end. Goal: p99 under 1 ms.

    .venv/bin/python -m bench.sanitizer
"""

from __future__ import annotations

import random
import statistics
import time

from headrace.services.sanitizer.policy import PromptPolicy

RUNS = 2_000
WARMUP = 200
TERMS = 10_000
PROMPT_BYTES = 4096

_WORDS = (
    "the quarterly report shows revenue growth across all regions while operating costs "
    "stayed flat please summarise the main drivers and list previous risks the team "
    "should review before the board meeting include customer churn pricing changes and "
    "the new system rollout schedule in a short table with one line per item"
).split()
# Realistic content for the redaction rules to work on: digits, a date, an amount,
# an e-mail address and a phone number appear in the prompt.
_FACTS = (
    "In 2024 revenue reached $1,234,567 (up 7.5%) by 2024-12-31. "
    "Contact finance at finance.team@example.com or +44 20 7946 0958. "
)


def make_prompt(rng: random.Random, size: int = PROMPT_BYTES) -> str:
    """About `size` bytes of business prose with a few numbers and contacts."""
    parts: list[str] = []
    length = 0
    while length < size:
        chunk = _FACTS if rng.random() < 0.05 else " ".join(rng.choices(_WORDS, k=12)) + ". "
        parts.append(chunk)
        length += len(chunk)
    return "".join(parts)[:size]


def make_terms(rng: random.Random, count: int = TERMS) -> list[str]:
    """Random lower-case terms of 6-16 letters (one in five a two-word phrase)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    terms: set[str] = set()
    while len(terms) < count:
        word = "".join(rng.choices(letters, k=rng.randint(6, 12)))
        if rng.random() < 0.2:
            word += " " + "".join(rng.choices(letters, k=rng.randint(3, 6)))
        terms.add(word)
    return sorted(terms)


def measure(runs: int = RUNS) -> tuple[float, float, float, str]:
    """p50, p99 and mean in microseconds, and a note on the prompt."""
    rng = random.Random(6)
    policy = PromptPolicy(max_bytes=32 * 1024, max_tokens_estimate=8192, deny_terms=make_terms(rng))
    prompt = make_prompt(rng)
    verdict = policy.evaluate(prompt)
    assert verdict.blocked is None, "the benchmark prompt must pass every rule"
    for _ in range(WARMUP):
        policy.evaluate(prompt)
    samples: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        policy.evaluate(prompt)
        samples.append((time.perf_counter() - started) * 1e6)
    samples.sort()
    note = f"{len(prompt.encode())} B prompt, {len(policy.deny_terms)} deny terms, redactions {verdict.redactions}"
    return (
        samples[len(samples) // 2],
        samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        statistics.fmean(samples),
        note,
    )


def run() -> list[str]:
    """Markdown table lines for `make bench`."""
    p50, p99, mean, note = measure()
    verdict = "meets" if p99 < 1000 else "misses"
    return [
        f"| sanitizer CheckPrompt, in process ({note}; {RUNS} runs) | p50 µs | p99 µs | mean µs |",
        "|---|---|---|---|",
        f"| evaluate(), 4 KB prompt, 10,000 deny terms ({verdict} p99 < 1 ms) "
        f"| {p50:.0f} | {p99:.0f} | {mean:.0f} |",
    ]


if __name__ == "__main__":
    print("\n".join(run()))
