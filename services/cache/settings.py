"""Cache settings (`HEADRACE_*`, `[cache]` in headrace.toml)."""

from __future__ import annotations

from typing import ClassVar, Literal

from headrace.services.runtime.settings import ServiceSettings


class CacheSettings(ServiceSettings):
    """Where and how long responses are kept."""

    section: ClassVar[str] = "cache"

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout_seconds: float = 0.1
    """A Redis call slower than this counts as a miss (fail-open)."""
    redis_reconnect_seconds: float = 5.0
    """With no Redis at start, how often to try it again (the in-process LRU serves meanwhile)."""
    cache_ttl_seconds: int = 3600
    cache_max_entry_bytes: int = 1024 * 1024
    memory_cache_entries: int = 10_000
    """Size of the in-process LRU used while no Redis answers."""
    cache_scope: Literal["shared", "subject"] = "shared"
    """shared: equal requests from anyone meet; subject: each subject has its own entries."""
    semantic_cache: bool = False
    """Also answer prompts similar in meaning to a stored one (see docs/cache.md)."""
    semantic_threshold: float = 0.95
    """Cosine similarity a stored prompt needs to answer a new one."""
    semantic_models: list[str] = []
    """Models the semantic cache may answer for; empty means all."""
    semantic_tasks: list[str] = []
    """Tasks the semantic cache may answer for; empty means all."""
    semantic_embedding_model: str = ""
    """GGUF used to embed prompts; empty means the packaged Gemma 3 270M. A dedicated
    embedding model (e.g. a BGE or nomic-embed GGUF) separates meanings far better."""
    semantic_extra_buffer_types: Literal["auto", "on", "off"] = "auto"
    """llama.cpp's extra buffer types for the embedding model, as the inference models'
    `extra_buffer_types` (auto: off on Intel AMX CPUs, where they crash)."""
    semantic_max_entries: int = 10_000
    flight_start_seconds: float = 10.0
    """A request that missed must start storing within this time, or requests waiting on
    it (single-flight) give up and generate themselves."""
