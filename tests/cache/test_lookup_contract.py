"""The Lookup/Store contract written in cache.proto: a miss makes the caller the key's
leader; followers wait for its Store; a Store that never comes releases them with a
clear status within `flight_start_seconds`. And the content digest is the key."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from headrace.cache.v1 import cache_pb2
from headrace.services.cache.answers import Answers
from headrace.services.cache.flights import Flights
from headrace.services.cache.responses import MemoryStore
from headrace.services.cache.servicer import Aborted, CacheServicer
from headrace.types.v1 import types_pb2
from tests.cache.test_semantic import lookup, store

FLIGHT_START_SECONDS = 0.3


def servicer() -> CacheServicer:
    holder = SimpleNamespace(store=MemoryStore(100))
    answers = Answers(holder, Flights(FLIGHT_START_SECONDS), 60, per_subject=False)  # type: ignore[arg-type]
    return CacheServicer(answers, auth=None)  # type: ignore[arg-type]


def key(prompt: str = "hi", digest: str = "") -> cache_pb2.CacheKey:
    return cache_pb2.CacheKey(
        model="tiny",
        prompt=prompt,
        content_digest=digest,
        params=types_pb2.SamplingParams(temperature=0.0, max_tokens=8),
    )


async def test_followers_of_a_lookup_whose_store_never_comes_are_released_in_time() -> None:
    cache = servicer()
    assert [m.hit for m in await lookup(cache, key())] == [False]  # the leader, who never stores
    started = time.monotonic()
    followers = [asyncio.create_task(lookup(cache, key())) for _ in range(3)]
    for follower in followers:
        with pytest.raises(Aborted) as info:
            await asyncio.wait_for(follower, FLIGHT_START_SECONDS + 2)
        assert "retry the request" in info.value.message
    waited = time.monotonic() - started
    assert waited <= FLIGHT_START_SECONDS + 0.5, waited
    # The key is free again: the next identical request leads a new flight.
    assert [m.hit for m in await lookup(cache, key())] == [False]


async def test_a_store_that_starts_in_time_feeds_the_waiting_followers() -> None:
    cache = servicer()
    await lookup(cache, key())
    follower = asyncio.create_task(lookup(cache, key()))
    await asyncio.sleep(0.01)
    await store(cache, key(), "answer")
    replies = await follower
    assert "".join(m.text for m in replies) == "answer"
    assert replies[-1].finish_reason == types_pb2.FINISH_REASON_STOP


async def test_the_content_digest_stands_for_the_content() -> None:
    cache = servicer()
    await store(cache, key(prompt="", digest="d1"), "for d1")
    assert "".join(m.text for m in await lookup(cache, key(prompt="", digest="d1"))) == "for d1"
    assert [m.hit for m in await lookup(cache, key(prompt="", digest="d2"))] == [False]
    # A digest and a bare prompt with the same text are different content.
    assert [m.hit for m in await lookup(cache, key(prompt="d1"))] == [False]


async def test_a_request_under_another_output_policy_never_follows_the_flight() -> None:
    # The leader's answer is filtered with its tier's policy; a follower under another
    # policy would receive text filtered for someone else (more or less redacted).
    cache = servicer()

    def under(policy: str) -> cache_pb2.CacheKey:
        copy = key()
        copy.output_policy = policy
        return copy

    assert [m.hit for m in await lookup(cache, under("strict"))] == [False]  # leads
    other = await asyncio.wait_for(lookup(cache, under("loose")), 1)
    assert [m.hit for m in other] == [False], "leads its own flight, does not wait"
    same = asyncio.create_task(lookup(cache, under("strict")))
    await asyncio.sleep(0.01)
    await store(cache, under("strict"), "strict answer")
    await store(cache, under("loose"), "loose answer")
    assert "".join(m.text for m in await same) == "strict answer"
    assert "".join(m.text for m in await lookup(cache, under("loose"))) == "loose answer"
