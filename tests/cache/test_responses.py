"""The response cache: keys, entries, the memory and Redis stores, and CacheServicer."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as redis
from google.protobuf import json_format

from headrace.cache.v1 import cache_pb2
from headrace.services.cache.answers import Answers
from headrace.services.cache.flights import Flights
from headrace.services.cache.responses import (
    KEY_PREFIX,
    Entry,
    MemoryStore,
    RedisStore,
    ResponseCache,
    cache_key,
)
from headrace.services.cache.servicer import CacheServicer
from headrace.services.runtime.errors import InvalidArgument
from headrace.services.runtime.params import is_deterministic
from headrace.types.v1 import types_pb2

REDIS_URL = "redis://127.0.0.1:6379/0"
CLOSED_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def _entry(text: str = "hello") -> Entry:
    return Entry(
        chunks=[text, " world"],
        finish_reason=types_pb2.FINISH_REASON_STOP,
        prompt_tokens=3,
        completion_tokens=2,
    )


# --- cache_key and is_cacheable ------------------------------------------------------


def test_cache_key_is_stable_across_param_dict_ordering() -> None:
    a = {"temperature": 0.0, "max_tokens": 16, "stop": ["\n"], "seed": "7"}
    b = dict(reversed(list(a.items())))

    assert list(a) != list(b)
    assert cache_key("tiny", "hi", a) == cache_key("tiny", "hi", b)


def test_cache_key_is_the_model_and_a_hex_sha256() -> None:
    model, _, digest = cache_key("tiny", "hi", {}).partition(":")

    assert model == "tiny"
    assert len(digest) == 64
    int(digest, 16)


def test_cache_key_includes_the_subject_only_when_given() -> None:
    assert cache_key("tiny", "hi", {}, "alice") != cache_key("tiny", "hi", {}, "bob")
    assert cache_key("tiny", "hi", {}) == cache_key("tiny", "hi", {}, "")


def test_cache_key_keeps_answers_filtered_under_different_output_policies_apart() -> None:
    # A tier without output rules must not fill the cache with text that another
    # tier's filter would have redacted.
    plain = cache_key("tiny", "hi", {})
    filtered = cache_key("tiny", "hi", {}, output_policy="a1b2")
    assert filtered != plain != cache_key("tiny", "hi", {}, output_policy="c3d4")
    assert filtered != cache_key("tiny", "hi", {}, output_policy="c3d4")
    assert cache_key("tiny", "hi", {}, output_policy="") == plain


@pytest.mark.parametrize(
    ("model", "prompt", "params"),
    [
        ("other", "hi", {"temperature": 0.0, "max_tokens": 16}),
        ("tiny", "hi!", {"temperature": 0.0, "max_tokens": 16}),
        ("tiny", "Hi", {"temperature": 0.0, "max_tokens": 16}),
        ("tiny", "hi", {"temperature": 0.0, "max_tokens": 17}),
        ("tiny", "hi", {"temperature": 0.5, "max_tokens": 16}),
        ("tiny", "hi", {"temperature": 0.0, "max_tokens": 16, "seed": "1"}),
        ("tiny", "hi", {"temperature": 0.0}),
    ],
    ids=["model", "prompt", "prompt-case", "max_tokens", "temperature", "extra-seed", "fewer"],
)
def test_cache_key_differs_when_model_prompt_or_params_differ(
    model: str, prompt: str, params: dict[str, Any]
) -> None:
    base = cache_key("tiny", "hi", {"temperature": 0.0, "max_tokens": 16})

    assert cache_key(model, prompt, params) != base


def test_cache_key_does_not_confuse_prompt_and_model_boundaries() -> None:
    assert cache_key("ab", "c", {}) != cache_key("a", "bc", {})


@pytest.mark.parametrize(
    "params",
    [{"temperature": 0.0}, {"temperature": 0}, {"seed": "42"}, {"temperature": 0.9, "seed": "0"}],
)
def test_is_cacheable_for_greedy_decoding_or_a_fixed_seed(params: dict[str, Any]) -> None:
    assert is_deterministic(json_format.ParseDict(params, types_pb2.SamplingParams()))


@pytest.mark.parametrize("params", [{}, {"temperature": 0.8}, {"temperature": 1e-3, "top_k": 1}])
def test_is_not_cacheable_when_sampling_without_a_seed(params: dict[str, Any]) -> None:
    assert not is_deterministic(json_format.ParseDict(params, types_pb2.SamplingParams()))


# --- Entry ---------------------------------------------------------------------------------


def test_entry_encode_decode_round_trips() -> None:
    entry = Entry(
        chunks=["héllo", " ✓ ", "", "\n"],
        finish_reason=types_pb2.FINISH_REASON_LENGTH,
        prompt_tokens=11,
        completion_tokens=4,
    )

    blob = entry.encode()

    assert isinstance(blob, bytes)
    assert Entry.decode(blob) == entry


# --- MemoryStore --------------------------------------------------------------------------


async def test_memory_store_returns_none_for_a_missing_key() -> None:
    assert await MemoryStore(max_entries=2).get("missing") is None


async def test_memory_store_evicts_the_least_recently_used_entry() -> None:
    store = MemoryStore(max_entries=2)
    await store.put("a", _entry("a"), ttl_seconds=60)
    await store.put("b", _entry("b"), ttl_seconds=60)
    assert await store.get("a") == _entry("a")  # "a" is now the most recently used

    await store.put("c", _entry("c"), ttl_seconds=60)

    assert await store.get("b") is None
    assert await store.get("a") == _entry("a")
    assert await store.get("c") == _entry("c")


async def test_memory_store_overwriting_a_key_refreshes_it_without_growing() -> None:
    store = MemoryStore(max_entries=2)
    await store.put("a", _entry("a1"), ttl_seconds=60)
    await store.put("b", _entry("b"), ttl_seconds=60)
    await store.put("a", _entry("a2"), ttl_seconds=60)
    await store.put("c", _entry("c"), ttl_seconds=60)

    assert await store.get("a") == _entry("a2")
    assert await store.get("b") is None


# --- RedisStore ------------------------------------------------------------------------


@pytest.fixture
async def redis_client() -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=1.0)
    try:
        await client.ping()
    except (redis.RedisError, OSError) as exc:
        await client.aclose()
        pytest.skip(f"no Redis at {REDIS_URL}: {exc}")
    yield client
    await client.aclose()


@pytest.fixture
async def redis_key(redis_client: redis.Redis) -> AsyncIterator[str]:
    key = f"test-{uuid.uuid4().hex}"
    yield key
    await redis_client.delete(KEY_PREFIX + key)


def _closed_port_store(timeout_s: float = 0.3) -> RedisStore:
    client = redis.Redis.from_url(CLOSED_URL, socket_connect_timeout=0.2, socket_timeout=0.2)
    return RedisStore(client, timeout_s=timeout_s, max_entry_bytes=1 << 20)


async def test_redis_store_round_trips_an_entry_with_a_ttl(
    redis_client: redis.Redis, redis_key: str
) -> None:
    store = RedisStore(redis_client, timeout_s=1.0, max_entry_bytes=1 << 20)

    assert await store.put(redis_key, _entry(), ttl_seconds=60) is True

    assert await store.get(redis_key) == _entry()
    ttl = await redis_client.ttl(KEY_PREFIX + redis_key)
    assert 0 < ttl <= 60


async def test_redis_store_returns_none_for_a_missing_key(
    redis_client: redis.Redis, redis_key: str
) -> None:
    store = RedisStore(redis_client, timeout_s=1.0, max_entry_bytes=1 << 20)

    assert await store.get(redis_key) is None


async def test_redis_store_refuses_an_entry_over_max_entry_bytes(
    redis_client: redis.Redis, redis_key: str
) -> None:
    store = RedisStore(redis_client, timeout_s=1.0, max_entry_bytes=16)

    assert await store.put(redis_key, _entry(), ttl_seconds=60) is False
    assert await redis_client.exists(KEY_PREFIX + redis_key) == 0


async def test_redis_store_get_fails_open_when_redis_is_unreachable() -> None:
    store = _closed_port_store()
    try:
        started = time.monotonic()
        assert await store.get("anything") is None
        assert time.monotonic() - started < 2.0
    finally:
        await store.close()


async def test_redis_store_put_fails_open_when_redis_is_unreachable() -> None:
    store = _closed_port_store()
    try:
        started = time.monotonic()
        assert await store.put("anything", _entry(), ttl_seconds=60) is False
        assert time.monotonic() - started < 2.0
    finally:
        await store.close()


async def test_cache_falls_back_to_memory_when_redis_is_unreachable() -> None:
    cache = ResponseCache(CLOSED_URL, 0.1, 1024, 5, reconnect_s=60)
    await cache.start()
    try:
        assert isinstance(cache.store, MemoryStore)
        assert cache.store.max_entries == 5
    finally:
        await cache.close()


async def test_cache_uses_redis_when_it_answers(redis_client: redis.Redis) -> None:
    cache = ResponseCache(REDIS_URL, 0.5, 1024, 5, reconnect_s=60)
    await cache.start()
    try:
        assert isinstance(cache.store, RedisStore)
    finally:
        await cache.close()


async def test_cache_hands_over_to_redis_once_it_answers(redis_client: redis.Redis) -> None:
    cache = ResponseCache(CLOSED_URL, 0.5, 1024, 5, reconnect_s=0.05)
    await cache.start()
    try:
        assert isinstance(cache.store, MemoryStore)
        cache._url = REDIS_URL  # Redis "comes up" where the cache keeps looking
        for _ in range(100):
            if isinstance(cache.store, RedisStore):
                break
            await asyncio.sleep(0.02)
        assert isinstance(cache.store, RedisStore)
    finally:
        await cache.close()


# --- CacheServicer -------------------------------------------------------------------------


class _Context:
    """Stands in for grpc.aio.ServicerContext; the methods only pass it along."""


def _key(
    prompt: str = "hi", *, temperature: float | None = 0.0, seed: int | None = None
) -> cache_pb2.CacheKey:
    params = types_pb2.SamplingParams(max_tokens=16)
    if temperature is not None:
        params.temperature = temperature
    if seed is not None:
        params.seed = seed
    return cache_pb2.CacheKey(model="tiny", prompt=prompt, params=params)


def _hashed(key: cache_pb2.CacheKey) -> str:
    """The store key the servicer uses for a CacheKey."""
    params = json_format.MessageToDict(key.params, preserving_proto_field_name=True)
    return cache_key(key.model, key.prompt, params)  # shared scope: no subject


def _stream(
    key: cache_pb2.CacheKey,
    chunks: Iterable[str],
    *,
    finish_reason: int | None = types_pb2.FINISH_REASON_STOP,
    usage: types_pb2.Usage | None = None,
) -> list[cache_pb2.StoreRequest]:
    """The StoreRequests of a response; finish_reason None leaves out the complete message."""
    messages = [cache_pb2.StoreRequest(key=key)]
    messages += [cache_pb2.StoreRequest(text=chunk) for chunk in chunks]
    if finish_reason is not None:
        messages.append(
            cache_pb2.StoreRequest(
                complete=True,
                finish_reason=finish_reason,
                usage=usage or types_pb2.Usage(prompt_tokens=5, completion_tokens=3),
            )
        )
    return messages


async def _aiter(messages: list[cache_pb2.StoreRequest]) -> AsyncIterator[cache_pb2.StoreRequest]:
    for message in messages:
        yield message


async def _store(servicer: CacheServicer, messages: list[cache_pb2.StoreRequest]) -> bool:
    response = await servicer.Store(_aiter(messages), _Context())  # type: ignore[arg-type]
    return response.stored


async def _lookup(
    servicer: CacheServicer, key: cache_pb2.CacheKey
) -> list[cache_pb2.LookupResponse]:
    request = cache_pb2.LookupRequest(key=key)
    return [m async for m in servicer.Lookup(request, _Context())]  # type: ignore[arg-type]


def _make(store: object, ttl_seconds: int) -> CacheServicer:
    holder = SimpleNamespace(store=store)
    answers = Answers(holder, Flights(10.0), ttl_seconds, per_subject=False)  # type: ignore[arg-type]
    return CacheServicer(answers, auth=None)  # type: ignore[arg-type]


def _servicer() -> tuple[CacheServicer, MemoryStore]:
    store = MemoryStore(max_entries=100)
    return _make(store, 60), store


async def test_lookup_misses_with_a_single_hit_false_message() -> None:
    servicer, _ = _servicer()

    assert await _lookup(servicer, _key()) == [cache_pb2.LookupResponse(hit=False)]


@pytest.mark.parametrize(
    "finish_reason", [types_pb2.FINISH_REASON_STOP, types_pb2.FINISH_REASON_LENGTH]
)
async def test_complete_response_is_stored_and_replayed_chunk_for_chunk(
    finish_reason: int,
) -> None:
    servicer, _ = _servicer()
    chunks = ["Hel", "lo", ", wor", "ld"]
    usage = types_pb2.Usage(prompt_tokens=7, completion_tokens=4)

    assert await _store(servicer, _stream(_key(), chunks, finish_reason=finish_reason, usage=usage))
    replay = await _lookup(servicer, _key())

    assert [m.text for m in replay] == chunks
    assert all(m.hit for m in replay)
    last = replay[-1]
    assert last.finish_reason == finish_reason
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        7,
        4,
        11,
    )
    for message in replay[:-1]:
        assert message.finish_reason == types_pb2.FINISH_REASON_UNSPECIFIED
        assert not message.HasField("usage")


async def test_text_on_the_complete_message_is_kept_as_the_last_chunk() -> None:
    servicer, _ = _servicer()
    messages = _stream(_key(), ["a"])
    messages[-1].text = "b"

    assert await _store(servicer, messages)

    assert [m.text for m in await _lookup(servicer, _key())] == ["a", "b"]


async def test_lookup_of_a_different_prompt_misses() -> None:
    servicer, _ = _servicer()
    assert await _store(servicer, _stream(_key("hi"), ["x"]))

    assert [m.hit for m in await _lookup(servicer, _key("hi!"))] == [False]


async def test_stream_that_ends_without_complete_stores_nothing() -> None:
    servicer, store = _servicer()

    assert await _store(servicer, _stream(_key(), ["partial"], finish_reason=None)) is False

    assert len(store._entries) == 0
    assert [m.hit for m in await _lookup(servicer, _key())] == [False]


@pytest.mark.parametrize(
    "finish_reason",
    [
        types_pb2.FINISH_REASON_CANCELLED,
        types_pb2.FINISH_REASON_CONTENT_FILTER,
        types_pb2.FINISH_REASON_UNSPECIFIED,
    ],
)
async def test_response_that_did_not_finish_normally_stores_nothing(finish_reason: int) -> None:
    servicer, store = _servicer()

    stored = await _store(servicer, _stream(_key(), ["text"], finish_reason=finish_reason))

    assert stored is False
    assert len(store._entries) == 0
    assert [m.hit for m in await _lookup(servicer, _key())] == [False]


async def test_non_deterministic_response_is_neither_stored_nor_looked_up() -> None:
    servicer, store = _servicer()
    sampled = _key(temperature=0.8)

    assert await _store(servicer, _stream(sampled, ["random"])) is False
    assert len(store._entries) == 0

    # Even if an entry sits under that key, a non-deterministic request never reads it.
    await store.put(_hashed(sampled), _entry(), ttl_seconds=60)
    assert [m.hit for m in await _lookup(servicer, sampled)] == [False]


async def test_response_with_a_fixed_seed_is_cached_at_any_temperature() -> None:
    servicer, _ = _servicer()
    seeded = _key(temperature=0.8, seed=1234)

    assert await _store(servicer, _stream(seeded, ["same", " again"]))

    assert [m.text for m in await _lookup(servicer, seeded)] == ["same", " again"]


async def test_store_rejects_a_stream_whose_first_message_has_no_key() -> None:
    servicer, _ = _servicer()

    with pytest.raises(InvalidArgument, match="key"):
        await _store(servicer, [cache_pb2.StoreRequest(text="no key")])


async def test_empty_complete_response_replays_as_one_final_message() -> None:
    servicer, _ = _servicer()

    assert await _store(servicer, _stream(_key(), []))
    replay = await _lookup(servicer, _key())

    assert len(replay) == 1
    assert replay[0].hit is True
    assert replay[0].text == ""
    assert replay[0].finish_reason == types_pb2.FINISH_REASON_STOP


async def test_servicer_stores_through_redis(redis_client: redis.Redis) -> None:
    store = RedisStore(redis_client, timeout_s=1.0, max_entry_bytes=1 << 20)
    servicer = _make(store, 30)
    key = _key(f"redis-{uuid.uuid4().hex}")
    redis_key = KEY_PREFIX + _hashed(key)
    try:
        assert await _store(servicer, _stream(key, ["a", "b"]))
        replay = await _lookup(servicer, key)
        assert [m.text for m in replay] == ["a", "b"]
        assert 0 < await redis_client.ttl(redis_key) <= 30
    finally:
        await redis_client.delete(redis_key)


async def test_memory_store_entries_expire_after_their_ttl() -> None:
    from headrace.services.cache.responses import Entry, MemoryStore

    store = MemoryStore(10)
    await store.put("k", Entry(["a"], 1, 1, 1), ttl_seconds=0)
    assert await store.get("k") is None


async def test_memory_store_refuses_entries_over_the_size_cap() -> None:
    import os

    from headrace.services.cache.responses import Entry, MemoryStore

    store = MemoryStore(10, max_entry_bytes=100)
    assert not await store.put("k", Entry([os.urandom(200).hex()], 1, 1, 1), ttl_seconds=60)
    assert await store.get("k") is None


def test_cache_key_changes_with_the_model_revision() -> None:
    assert cache_key("tiny", "hi", {}, "", "rev-a") != cache_key("tiny", "hi", {}, "", "rev-b")
