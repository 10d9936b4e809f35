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
from headrace.services.runtime.errors import InvalidArgument
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


# ---- Answer: Lookup and Store on one stream ---------------------------------------


class Caller:
    """The caller's side of one Answer call: messages it sends, replies it reads. The
    handler runs on its own, as under gRPC, which sends each reply as it is made."""

    def __init__(self, cache: CacheServicer, first: cache_pb2.AnswerRequest) -> None:
        self._sent: asyncio.Queue[cache_pb2.AnswerRequest | None] = asyncio.Queue()
        self._sent.put_nowait(first)
        self._replies: asyncio.Queue[cache_pb2.AnswerResponse | BaseException | None] = (
            asyncio.Queue()
        )
        self._task = asyncio.create_task(self._run(cache))

    async def _requests(self):  # type: ignore[no-untyped-def]
        while (message := await self._sent.get()) is not None:
            yield message

    async def _run(self, cache: CacheServicer) -> None:
        try:
            async for reply in cache.Answer(self._requests(), None):  # type: ignore[arg-type]
                self._replies.put_nowait(reply)
            self._replies.put_nowait(None)
        except Exception as exc:
            self._replies.put_nowait(exc)

    def send(self, message: cache_pb2.AnswerRequest | None) -> None:
        """A message, or None for the half-close."""
        self._sent.put_nowait(message)

    async def read(self) -> cache_pb2.AnswerResponse:
        reply = await asyncio.wait_for(self._replies.get(), 1)
        if isinstance(reply, BaseException):
            raise reply
        assert reply is not None, "the call ended"
        return reply

    async def rest(self) -> list[cache_pb2.AnswerResponse]:
        replies = []
        while (reply := await asyncio.wait_for(self._replies.get(), 1)) is not None:
            if isinstance(reply, BaseException):
                raise reply
            replies.append(reply)
        return replies


def answer_key(prompt: str = "hi") -> cache_pb2.AnswerRequest:
    return cache_pb2.AnswerRequest(key=key(prompt))


def complete(text: str = "") -> cache_pb2.AnswerRequest:
    return cache_pb2.AnswerRequest(
        text=text,
        complete=True,
        finish_reason=types_pb2.FINISH_REASON_STOP,
        usage=types_pb2.Usage(prompt_tokens=3, completion_tokens=2),
    )


async def test_answer_stores_what_its_caller_generated_after_a_miss_on_the_same_stream() -> None:
    cache = servicer()
    leader = Caller(cache, answer_key())
    miss = await leader.read()
    assert (miss.hit, miss.stored) == (False, False)
    leader.send(cache_pb2.AnswerRequest(text="Hello"))
    leader.send(complete(", world"))
    leader.send(None)
    [last] = await leader.rest()
    assert (last.hit, last.stored) == (False, True)
    # Both ways of asking now find it, chunked as it was sent.
    again = await Caller(cache, answer_key()).rest()
    assert [m.text for m in again] == ["Hello", ", world"] and all(m.hit for m in again)
    assert again[-1].finish_reason == types_pb2.FINISH_REASON_STOP
    assert again[-1].usage.completion_tokens == 2
    assert "".join(m.text for m in await lookup(cache, key())) == "Hello, world"


async def test_a_hit_ends_the_answer_call_without_waiting_for_the_caller() -> None:
    cache = servicer()
    await store(cache, key(), "stored")
    caller = Caller(cache, answer_key())  # never half-closes
    replies = await asyncio.wait_for(caller.rest(), 1)
    assert "".join(m.text for m in replies) == "stored" and all(m.hit for m in replies)


async def test_followers_of_an_answer_leader_get_its_text_as_it_streams() -> None:
    cache = servicer()
    leader = Caller(cache, answer_key())
    assert not (await leader.read()).hit
    by_lookup = asyncio.create_task(lookup(cache, key()))
    by_answer = Caller(cache, answer_key())
    leader.send(cache_pb2.AnswerRequest(text="shared"))
    first = await by_answer.read()
    assert (first.hit, first.text) == (True, "shared"), "the follower saw the text before the end"
    leader.send(complete())
    leader.send(None)
    assert (await leader.rest())[-1].stored
    rest = await by_answer.rest()
    assert rest[-1].finish_reason == types_pb2.FINISH_REASON_STOP
    assert "".join(m.text for m in await by_lookup) == "shared"


async def test_an_answer_leader_that_stops_before_complete_stores_nothing_and_releases_followers() -> (
    None
):
    cache = servicer()
    leader = Caller(cache, answer_key())
    assert not (await leader.read()).hit
    follower = asyncio.create_task(lookup(cache, key()))
    leader.send(cache_pb2.AnswerRequest(text="half an answ"))
    leader.send(None)  # half-closed without complete: the filter blocked it, say
    [last] = await leader.rest()
    assert (last.hit, last.stored) == (False, False)
    with pytest.raises(Aborted):
        await asyncio.wait_for(follower, 1)
    # Nothing was kept and the key is free: the next caller leads again.
    assert not (await Caller(cache, answer_key()).read()).hit


async def test_an_answer_call_whose_first_message_has_no_key_is_refused() -> None:
    cache = servicer()
    caller = Caller(cache, cache_pb2.AnswerRequest(text="no key"))
    with pytest.raises(InvalidArgument, match="must carry the key"):
        await caller.read()
    assert [m.hit for m in await lookup(cache, key())] == [False], "nothing was opened"
