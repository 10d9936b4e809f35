"""Inference metrics, named after vLLM's and TGI's so their dashboards translate."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

TIME_TO_FIRST_TOKEN = Histogram(
    "headrace_inference_time_to_first_token_seconds",
    "From admission of a request to its first decoded token.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
INTER_TOKEN_LATENCY = Histogram(
    "headrace_inference_inter_token_latency_seconds",
    "Time between consecutive decoded tokens of one sequence.",
    ["model"],
    buckets=(0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1),
)
E2E_LATENCY = Histogram(
    "headrace_inference_e2e_request_latency_seconds",
    "From arrival of a request to its last token, queueing included.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
QUEUE_TIME = Histogram(
    "headrace_inference_queue_time_seconds",
    "Time a request waited for a slot.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
PROMPT_TOKENS = Counter(
    "headrace_inference_prompt_tokens_total", "Prompt tokens processed.", ["model"]
)
GENERATION_TOKENS = Counter(
    "headrace_inference_generation_tokens_total", "Tokens generated.", ["model"]
)
REQUESTS = Counter(
    "headrace_inference_requests_total",
    "Finished generations by finish reason (stop, length, cancelled).",
    ["model", "finish_reason"],
)
REJECTED = Counter(
    "headrace_inference_rejected_total",
    "Requests refused at admission because the queue was full.",
    ["model"],
)
CANCELLATIONS = Counter(
    "headrace_inference_cancellations_total",
    "Generations stopped because the client cancelled or its deadline passed.",
    ["model"],
)
QUEUE_DEPTH = Gauge("headrace_inference_queue_depth", "Requests waiting for a slot.", ["model"])
BUSY_SLOTS = Gauge("headrace_inference_busy_slots", "Slots decoding a sequence.", ["model"])
BATCH_SIZE = Histogram(
    "headrace_inference_batch_size",
    "Sequences sampled per llama_decode call.",
    ["model"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
)
PREFIX_REUSED_TOKENS = Counter(
    "headrace_inference_prefix_reused_tokens_total",
    "Prompt tokens whose KV cells were reused from a slot's cache instead of evaluated.",
    ["model"],
)
PREFIX_SHARED = Counter(
    "headrace_inference_prefix_shared_total",
    "Requests whose reused prefix was shared from another slot's KV cells "
    "(llama_memory_seq_cp), so that slot kept the rest of its cache.",
    ["model"],
)
PREFIX_REUSE_RATIO = Histogram(
    "headrace_inference_prefix_reuse_ratio",
    "Share of each prompt's tokens whose KV cells were reused from a slot (the next turn "
    "of a conversation reuses its history).",
    ["model"],
    buckets=(0.0, 0.1, 0.25, 0.5, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0),
)
GRAMMAR_CHECKS = Counter(
    "headrace_inference_grammar_checks_total",
    "Tokens of constrained sequences: accepted by the grammar as first picked, or "
    "resampled from the vocabulary masked by the grammar.",
    ["model", "outcome"],
)
PAUSED_SEQUENCES = Gauge(
    "headrace_inference_paused_sequences",
    "Sequences holding their slot but not decoding, because their client reads slower "
    "than the model writes (HEADRACE_STREAM_BUFFER_TOKENS deltas are waiting for it).",
    ["model"],
)
UNDELIVERED_DELTAS = Gauge(
    "headrace_inference_undelivered_deltas",
    "Decoded deltas (about one per token) not yet taken by their streams, all together.",
    ["model"],
)
HELD_SEQUENCES = Gauge(
    "headrace_inference_held_sequences",
    "Speculative sequences (Speculate) holding a slot, prefilled or prefilling, that wait "
    "for the router's commit before any token leaves; 0 when no speculation is pending.",
    ["model"],
)
SPECULATIONS = Counter(
    "headrace_inference_speculations_total",
    "Speculative prefills by how they ended: committed (released to the client), "
    "dropped (cancelled before the commit, or their slot given to a checked request; "
    "KV cells cleared), refused (no free slot to prefill in).",
    ["model", "outcome"],
)
