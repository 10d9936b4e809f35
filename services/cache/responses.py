"""The response cache: keys, entries, and the Redis and in-process stores.

A key is the SHA-256 of a canonical JSON encoding of model, sanitised prompt
and the sampling parameters with defaults filled in, so equal requests meet
and different ones never do. Only deterministic requests (temperature 0, or
a fixed seed) are cacheable.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import zlib
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

from headrace.services.runtime.logs import get_logger

log = get_logger(__name__)

KEY_PREFIX = "headrace:cache:v1:"


def cache_key(model: str, prompt: str, params: dict[str, Any]) -> str:
    """The cache key of a request (hex SHA-256)."""
    canonical = json.dumps(
        {"model": model, "prompt": prompt, "params": params},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def is_cacheable(params: dict[str, Any]) -> bool:
    """Only deterministic requests repeat: greedy decoding or a fixed seed."""
    return float(params.get("temperature", 1.0)) == 0.0 or "seed" in params


@dataclass
class Entry:
    """A complete response, chunked as it streamed."""

    chunks: list[str]
    finish_reason: int
    prompt_tokens: int
    completion_tokens: int

    def encode(self) -> bytes:
        return zlib.compress(json.dumps(asdict(self), separators=(",", ":")).encode())

    @classmethod
    def decode(cls, blob: bytes) -> Entry:
        return cls(**json.loads(zlib.decompress(blob)))


class ResponseStore(Protocol):
    """Where entries live."""

    async def get(self, key: str) -> Entry | None: ...
    async def put(self, key: str, entry: Entry, ttl_seconds: int) -> bool: ...
    async def close(self) -> None: ...


@dataclass
class MemoryStore:
    """An in-process LRU with the same TTL and size cap, used when Redis is not
    reachable at start."""

    max_entries: int
    max_entry_bytes: int = 1024 * 1024
    _entries: OrderedDict[str, tuple[float, bytes]] = field(default_factory=OrderedDict)

    async def get(self, key: str) -> Entry | None:
        item = self._entries.get(key)
        if item is None:
            return None
        expires, blob = item
        if time.monotonic() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return Entry.decode(blob)

    async def put(self, key: str, entry: Entry, ttl_seconds: int) -> bool:
        blob = entry.encode()
        if len(blob) > self.max_entry_bytes:
            return False
        self._entries[key] = (time.monotonic() + ttl_seconds, blob)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return True

    async def close(self) -> None:
        self._entries.clear()


class RedisStore:
    """Entries in Redis with a TTL. Errors and slow answers are misses (fail-open)."""

    def __init__(self, client: redis.Redis, timeout_s: float, max_entry_bytes: int) -> None:
        self._client = client
        self._timeout = timeout_s
        self._max_entry_bytes = max_entry_bytes
        self._failing = False

    def _failed(self, op: str, exc: BaseException) -> None:
        if not self._failing:
            log.warning("redis_unavailable", op=op, error=str(exc) or type(exc).__name__)
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("redis_recovered")
        self._failing = False

    async def get(self, key: str) -> Entry | None:
        try:
            blob = await asyncio.wait_for(self._client.get(KEY_PREFIX + key), self._timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("get", exc)
            return None
        self._recovered()
        if not blob:
            return None
        try:
            return Entry.decode(blob)
        except (zlib.error, ValueError, TypeError) as exc:
            # A corrupt or foreign value is a miss, never an error for the client.
            log.warning("cache_entry_unreadable", key=key, error=str(exc))
            return None

    async def put(self, key: str, entry: Entry, ttl_seconds: int) -> bool:
        blob = entry.encode()
        if len(blob) > self._max_entry_bytes:
            return False
        try:
            await asyncio.wait_for(
                self._client.set(KEY_PREFIX + key, blob, ex=ttl_seconds), self._timeout
            )
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed("set", exc)
            return False
        self._recovered()
        return True

    async def close(self) -> None:
        await self._client.aclose()


async def open_store(
    url: str, timeout_s: float, max_entry_bytes: int, memory_entries: int
) -> ResponseStore:
    """Redis when it answers a PING now, otherwise an in-process LRU (logged)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1.0)
    try:
        await asyncio.wait_for(client.ping(), 1.0)
    except (RedisError, OSError, TimeoutError) as exc:
        await client.aclose()
        log.warning(
            "redis_unreachable_using_memory_cache", url=url, error=str(exc) or type(exc).__name__
        )
        return MemoryStore(memory_entries, max_entry_bytes)
    log.info("cache_backend_redis", url=url)
    return RedisStore(client, timeout_s, max_entry_bytes)
