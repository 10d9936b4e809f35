"""Router metrics: what the client saw, per model, task and A/B arm.

Label values come from settings and the model catalog, never from a request: a
request naming an unknown model or task is counted under "none", so a caller
cannot grow the number of series.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

NONE = "none"

REQUESTS = Counter(
    "headrace_router_requests_total",
    "Generate requests by outcome: gRPC status code, and whether the cache served them.",
    ["model", "task", "arm", "code", "cached"],
)
TIME_TO_FIRST_TOKEN = Histogram(
    "headrace_router_time_to_first_token_seconds",
    "From the request's arrival at the router to its first text sent to the client "
    "(admission, cache lookup, queueing, prefill and the output filter included).",
    ["model", "arm"],
    buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30),
)
REQUEST_DURATION = Histogram(
    "headrace_router_request_duration_seconds",
    "From the request's arrival to its last message (or its error), per model and arm.",
    ["model", "arm"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120),
)
GENERATED_TOKENS = Counter(
    "headrace_router_generated_tokens_total",
    "Completion tokens sent to clients (from inference or the cache).",
    ["model", "arm", "cached"],
)
PROMPT_TOKENS = Counter(
    "headrace_router_prompt_tokens_total",
    "Prompt tokens of answered requests.",
    ["model", "arm"],
)


def record(
    *,
    model: str,
    task: str,
    arm: str,
    code: str,
    cached: bool,
    seconds: float,
    first_token_seconds: float | None,
    prompt_tokens: int,
    completion_tokens: int,
) -> None:
    """One finished Generate (labels already bounded by the caller)."""
    model, task, arm = model or NONE, task or NONE, arm or NONE
    hit = "true" if cached else "false"
    REQUESTS.labels(model, task, arm, code, hit).inc()
    REQUEST_DURATION.labels(model, arm).observe(seconds)
    if first_token_seconds is not None:
        TIME_TO_FIRST_TOKEN.labels(model, arm).observe(first_token_seconds)
    if completion_tokens:
        GENERATED_TOKENS.labels(model, arm, hit).inc(completion_tokens)
    if prompt_tokens:
        PROMPT_TOKENS.labels(model, arm).inc(prompt_tokens)


OUTPUT_RULE_MATCHES = Counter(
    "headrace_router_output_rule_matches_total",
    "Output rule matches that acted in the router's in-process filter (a block, a "
    "redaction, an allow that exempted text), by rule id.",
    ["rule", "action"],
)
OUTPUT_POLICY_UPDATES = Counter(
    "headrace_router_output_policy_updates_total",
    "New output policy versions received from the sanitizer's policy watch.",
)
OUTPUT_POLICY_REFUSALS = Counter(
    "headrace_router_output_policy_refusals_total",
    "Requests refused (UNAVAILABLE) because the output policy was not known to be current.",
)
SPECULATIVE_PREFILLS = Counter(
    "headrace_router_speculative_prefills_total",
    "Local prefills started before admission ended (speculation), by outcome: used "
    "(committed and streamed), discarded (the request was served otherwise: redacted "
    "content, a cache hit or single-flight follower, another model or parameters, the "
    "client gone), refused (auth, its quota or the sanitizer said no), failed (inference "
    "could not hold it; the request was generated afresh).",
    ["outcome"],
)
