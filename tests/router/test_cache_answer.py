"""The router's cache.Answer call (the typed cache client) against a real cache
servicer over gRPC: one call looks a request up and, on a miss, carries the copy of
the response generated instead."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from headrace.cache.v1 import cache_pb2_grpc
from headrace.services.cache.servicer import CacheServicer
from headrace.services.router.backends import CacheClient, ModelInfo, Piece, ResponseKey, Usage
from headrace.services.router.content import Content
from headrace.types.v1 import types_pb2
from tests.cache.test_lookup_contract import servicer
from tests.cache.test_semantic import lookup

STOP = types_pb2.FINISH_REASON_STOP


class Counting(grpc.aio.ServerInterceptor):
    """The RPCs the cache was called with, by method name."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
        self.methods.append(details.method.rsplit("/", 1)[-1])
        return await continuation(details)


@pytest.fixture
async def served() -> AsyncIterator[tuple[CacheServicer, CacheClient, Counting]]:
    cache, counting = servicer(), Counting()
    server = grpc.aio.server(interceptors=[counting])
    cache_pb2_grpc.add_CacheServiceServicer_to_server(cache, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield cache, CacheClient(cache_pb2_grpc.CacheServiceStub(channel), 5.0, 0.0), counting
    await server.stop(0)


def response_key(prompt: str = "hi") -> ResponseKey:
    params = types_pb2.SamplingParams(temperature=0.0, max_tokens=8)
    return ResponseKey(ModelInfo("tiny"), Content(prompt=prompt), params, subject="", task="")


async def hits(client: CacheClient, key: ResponseKey) -> tuple[list[Piece], object]:
    answer = client.answer(key, 5.0)
    return [piece async for piece in answer.hits()], answer.copy()


async def test_a_miss_and_its_copy_travel_on_one_call(
    served: tuple[CacheServicer, CacheClient, Counting],
) -> None:
    cache, client, counting = served
    pieces, copy = await hits(client, response_key())
    assert pieces == [] and copy is not None, "a miss leaves the call open for the copy"
    for text in ["Hel", "lo"]:
        await copy.add(text)  # type: ignore[attr-defined]
    await copy.complete(Piece(finish_reason=STOP, usage=Usage(3, 2)))  # type: ignore[attr-defined]
    await copy.stored()  # type: ignore[attr-defined]
    copy.close()  # type: ignore[attr-defined]
    assert counting.methods == ["Answer"], "no Store call of its own"
    # Stored: the next request is answered from it, and gets no copy to send.
    pieces, copy = await hits(client, response_key())
    assert "".join(p.text for p in pieces) == "Hello" and copy is None
    assert pieces[-1].finish_reason == STOP and pieces[-1].usage == Usage(3, 2)
    assert "".join(m.text for m in await lookup(cache, response_key().to_proto())) == "Hello"


async def test_a_copy_given_up_before_its_end_stores_nothing_and_frees_the_key(
    served: tuple[CacheServicer, CacheClient, Counting],
) -> None:
    _, client, _ = served
    _, copy = await hits(client, response_key())
    assert copy is not None
    await copy.add("partial")  # type: ignore[attr-defined]
    copy.close()  # type: ignore[attr-defined]  # the request failed: cancels the call
    pieces, again = await hits(client, response_key())
    assert pieces == [] and again is not None, "a miss again: this caller leads"
    again.close()  # type: ignore[attr-defined]


async def test_a_cache_that_cannot_be_reached_is_a_miss_without_a_copy() -> None:
    async with grpc.aio.insecure_channel("127.0.0.1:1") as channel:
        client = CacheClient(cache_pb2_grpc.CacheServiceStub(channel), 5.0, 0.0)
        pieces, copy = await hits(client, response_key())
    assert pieces == [] and copy is None
