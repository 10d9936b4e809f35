"""Upstream metrics, per hosted model (`upstream`, a name from settings) and provider."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "headrace_upstream_requests_total",
    "Requests for a hosted model, by outcome: ok, rate_limited (429), error, "
    "exhausted (allowance spent or cooling down, not sent), refused, cancelled.",
    ["upstream", "provider", "outcome"],
)
TOKENS = Counter(
    "headrace_upstream_tokens_total",
    "Tokens charged to a hosted model's allowance (the provider's count, else ours).",
    ["upstream", "provider", "direction"],
)
RATE_LIMITED = Counter(
    "headrace_upstream_rate_limited_total",
    "429 answers from the provider.",
    ["upstream", "provider"],
)
ERRORS = Counter(
    "headrace_upstream_errors_total",
    "Failed calls to the provider (5xx, timeouts, unreachable, cut streams).",
    ["upstream", "provider"],
)
LATENCY = Histogram(
    "headrace_upstream_request_seconds",
    "From sending a request to the provider to its last chunk.",
    ["upstream", "provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
FIRST_TOKEN = Histogram(
    "headrace_upstream_first_token_seconds",
    "From sending a request to the provider to its first text.",
    ["upstream", "provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ALLOWANCE_LIMIT = Gauge(
    "headrace_upstream_allowance_limit",
    "A free allowance's limit in its current period.",
    ["upstream", "provider", "window"],
)
ALLOWANCE_USED = Gauge(
    "headrace_upstream_allowance_used",
    "What is used of a free allowance in its current period (all replicas, via Redis).",
    ["upstream", "provider", "window"],
)
ALLOWANCE_LEFT = Gauge(
    "headrace_upstream_allowance_left",
    "What is left of a free allowance in its current period.",
    ["upstream", "provider", "window"],
)
