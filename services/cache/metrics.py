"""Cache metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LOOKUPS = Counter(
    "headrace_cache_lookups_total",
    "Lookups by result: hit (stored), shared (joined an identical request in flight), "
    "semantic (a similar prompt's response), miss.",
    ["result"],
)
STORES = Counter(
    "headrace_cache_stores_total",
    "Store streams by result: stored, incomplete (cancelled/failed/filtered), "
    "not_cacheable, rejected (too large or backend error).",
    ["result"],
)
ERRORS = Counter(
    "headrace_cache_errors_total", "Backend errors, each a miss or a skipped store.", ["op"]
)
STORED_BYTES = Counter("headrace_cache_stored_bytes_total", "Compressed bytes written.")
LOOKUP_LATENCY = Histogram(
    "headrace_cache_lookup_seconds",
    "Time to answer a lookup with its first message (hit or miss).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
)
BACKEND_UP = Gauge("headrace_cache_redis_up", "1 while Redis serves the cache, 0 otherwise.")
