"""The response cache: keys, entries, and the Redis and in-process stores.

A key is the SHA-256 of a canonical JSON encoding of model and its revision, sanitised prompt
(or, instead, the opaque content digest the caller made of the request's content)
and the sampling parameters with defaults filled in (and the subject, when the
cache is per subject, and the output policy the response is filtered with, when the
caller names one), so equal requests meet and different ones never do. Only
deterministic requests (temperature 0, or a fixed seed) are cacheable. Stored
keys carry the model name so one model's entries can be flushed.
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

from headrace.services.cache import metrics
from headrace.services.runtime.logs import get_logger
from headrace.services.runtime.redis_client import connect_redis

log = get_logger(__name__)

KEY_PREFIX = "headrace:cache:v1:"
_GLOB_SPECIAL = str.maketrans({c: f"\\{c}" for c in "*?[]\\"})


def cache_key(
    model: str,
    prompt: str,
    params: dict[str, Any],
    subject: str = "",
    revision: str = "",
    digest: str = "",
    output_policy: str = "",
) -> str:
    """The cache key of a request: `<model>:<hex SHA-256>`. A caller's opaque content
    `digest`, when given, stands for the content (and the prompt is left out); an
    `output_policy` digest, when given, keeps answers filtered under different output
    policies apart (keys made without one are unchanged)."""
    fields: dict[str, Any] = {
        "model": model,
        "revision": revision,
        "prompt": "" if digest else prompt,
        "params": params,
        "subject": subject,
    }
    if digest:
        fields["digest"] = digest
    if output_policy:
        fields["output_policy"] = output_policy
    canonical = json.dumps(
        fields,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return f"{model}:{hashlib.sha256(canonical.encode()).hexdigest()}"


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

    name: str

    async def get(self, key: str) -> Entry | None: ...
    async def put(self, key: str, entry: Entry, ttl_seconds: int) -> bool: ...
    async def flush(self, model: str) -> int: ...
    async def count(self) -> int: ...
    async def close(self) -> None: ...


@dataclass
class MemoryStore:
    """An in-process LRU with the same TTL and size cap, used while no Redis answers."""

    max_entries: int
    max_entry_bytes: int = 1024 * 1024
    name: str = "memory"
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
        metrics.STORED_BYTES.inc(len(blob))
        return True

    async def flush(self, model: str) -> int:
        doomed = [k for k in self._entries if not model or k.startswith(f"{model}:")]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    async def count(self) -> int:
        return len(self._entries)

    async def close(self) -> None:
        self._entries.clear()


class RedisStore:
    """Entries in Redis with a TTL. Errors and slow answers are misses (fail-open):
    a warning is logged once per outage and redis-py reconnects by itself."""

    name = "redis"

    def __init__(self, client: redis.Redis, timeout_s: float, max_entry_bytes: int) -> None:
        self._client = client
        self._timeout = timeout_s
        self._max_entry_bytes = max_entry_bytes
        self._failing = False

    def _failed(self, op: str, exc: BaseException) -> None:
        metrics.ERRORS.labels(op).inc()
        metrics.BACKEND_UP.set(0)
        if not self._failing:
            log.warning(
                "redis_unavailable_cache_misses", op=op, error=str(exc) or type(exc).__name__
            )
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("redis_recovered")
            metrics.BACKEND_UP.set(1)
        self._failing = False

    async def get(self, key: str) -> Entry | None:
        try:
            async with asyncio.timeout(self._timeout):  # no task of its own, as wait_for's
                blob = await self._client.get(KEY_PREFIX + key)
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
            metrics.ERRORS.labels("decode").inc()
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
        metrics.STORED_BYTES.inc(len(blob))
        return True

    def _pattern(self, model: str) -> str:
        return KEY_PREFIX + (f"{model.translate(_GLOB_SPECIAL)}:*" if model else "*")

    async def flush(self, model: str) -> int:
        deleted = 0
        batch: list[bytes] = []
        async for key in self._client.scan_iter(match=self._pattern(model), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await self._client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await self._client.unlink(*batch)
        return int(deleted)

    async def count(self) -> int:
        return sum([1 async for _ in self._client.scan_iter(match=self._pattern(""), count=1000)])

    async def close(self) -> None:
        await self._client.aclose()


class ResponseCache:
    """The store in use: Redis when it answers, else an in-process LRU that hands
    over to Redis as soon as Redis answers (checked every `reconnect_s`)."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        max_entry_bytes: int,
        memory_entries: int,
        reconnect_s: float,
    ) -> None:
        self._url = url
        self._timeout = timeout_s
        self._max_entry_bytes = max_entry_bytes
        self._reconnect_s = reconnect_s
        self.store: ResponseStore = MemoryStore(memory_entries, max_entry_bytes)
        self._probe: asyncio.Task[None] | None = None

    async def start(self) -> None:
        client, error = await connect_redis(self._url)
        if client is not None:
            self._use_redis(client)
            return
        log.warning("redis_unreachable_using_memory_cache", url=self._url, error=error)
        metrics.BACKEND_UP.set(0)
        self._probe = asyncio.create_task(self._reconnect(), name="cache-redis-probe")

    def _use_redis(self, client: redis.Redis) -> None:
        self.store = RedisStore(client, self._timeout, self._max_entry_bytes)
        metrics.BACKEND_UP.set(1)
        log.info("cache_backend_redis", url=self._url)

    async def _reconnect(self) -> None:
        while True:
            await asyncio.sleep(self._reconnect_s)
            client, _ = await connect_redis(self._url)
            if client is not None:
                self._use_redis(client)
                return

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        await self.store.close()
