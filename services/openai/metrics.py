"""The front door's Prometheus metrics (its /metrics port, beside the runtime's).

Labels come from a fixed set (endpoint names, HTTP status codes), never from a request.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ENDPOINTS = ("chat.completions", "completions", "models")

REQUESTS = Counter(
    "headrace_openai_requests_total",
    "OpenAI API requests answered, by endpoint and HTTP status.",
    ["endpoint", "status"],
)
SECONDS = Histogram(
    "headrace_openai_request_seconds",
    "Time from a request's arrival to the end of its response (whole stream).",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
FIRST_TEXT = Histogram(
    "headrace_openai_first_text_seconds",
    "Time from a request's arrival to its first text leaving the service.",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
IN_FLIGHT = Gauge(
    "headrace_openai_in_flight",
    "Requests being answered right now (streams until their last event).",
    ["endpoint"],
)
DISCONNECTS = Counter(
    "headrace_openai_client_disconnects_total",
    "Streams the client closed before the end (their generation was cancelled).",
    ["endpoint"],
)
