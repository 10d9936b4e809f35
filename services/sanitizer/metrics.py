"""Sanitizer metrics."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Histogram

from headrace.services.runtime.output_filter.rules import Direction, Hit

RULE_MATCHES = Counter(
    "headrace_sanitizer_rule_matches_total",
    "Rule matches that acted: a block, a redaction, an allow that exempted text.",
    ["rule", "action", "direction"],
)
CHECK_PROMPT_SECONDS = Histogram(
    "headrace_sanitizer_check_prompt_seconds",
    "Time CheckPrompt spends normalising, matching and redacting one prompt.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)

GUARD_VERDICTS = Counter(
    "headrace_sanitizer_guard_verdicts_total",
    "Verdicts of the guard model: safe, unsafe, unknown (no answer within the budget).",
    ["verdict"],
)


def record(hits: Iterable[Hit], direction: Direction) -> None:
    """Count the matches that acted, by rule id (never by matched text)."""
    for hit in hits:
        RULE_MATCHES.labels(hit.rule.id, hit.rule.action.value, direction.value).inc()
