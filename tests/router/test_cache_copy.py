"""The router's copy of a response to the cache (the typed cache client's cache.Store
call): gathered, not per token."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from headrace.cache.v1 import cache_pb2
from headrace.services.router.backends import CacheClient, ModelInfo, Piece, ResponseKey, Usage
from headrace.services.router.content import Content
from headrace.services.router.settings import RouterSettings
from headrace.types.v1 import types_pb2

PIECES = [f" word{i}" for i in range(40)]


class Store:
    """cache.Store's client-streaming call, recording what it is sent."""

    def __init__(self) -> None:
        self.messages: list[cache_pb2.StoreRequest] = []
        self._reply: asyncio.Future[cache_pb2.StoreResponse] = (
            asyncio.get_running_loop().create_future()
        )

    async def write(self, message: cache_pb2.StoreRequest) -> None:
        assert not self._reply.done(), "written after done_writing"
        self.messages.append(message)

    async def done_writing(self) -> None:
        self._reply.set_result(cache_pb2.StoreResponse(stored=True))

    def __await__(self) -> Any:
        return self._reply.__await__()

    def done(self) -> bool:
        return self._reply.done()

    def cancel(self) -> bool:
        return True


async def stream(interval_ms: float, pieces: list[str], gap: float) -> tuple[list[str], Store]:
    """The typed cache client's copy of a response whose pieces come `gap` s apart."""
    store = Store()
    stub = SimpleNamespace(Store=lambda **kw: store)
    settings = RouterSettings(cache_store_interval_ms=interval_ms)
    client = CacheClient(stub, 10.0, settings.cache_store_interval_ms / 1000)  # type: ignore[arg-type]
    key = ResponseKey(
        ModelInfo("m"), Content(prompt="p"), types_pb2.SamplingParams(), subject="", task=""
    )
    copy = await client.copy(key)
    sent = []
    for text in pieces:
        await asyncio.sleep(gap)
        sent.append(text)
        await copy.add(text)
    final = Piece(
        finish_reason=types_pb2.FINISH_REASON_LENGTH,
        usage=Usage(prompt_tokens=3, completion_tokens=len(pieces)),
    )
    await copy.complete(final)
    await copy.stored()
    copy.close()
    return sent, store


async def test_the_cache_gets_the_text_in_a_few_messages_not_one_per_token() -> None:
    out, store = await stream(50, PIECES, 0.005)
    assert out == PIECES
    first, *texts = store.messages
    assert first.key.prompt == "p" and not first.text
    assert "".join(m.text for m in texts) == "".join(PIECES)
    # 40 pieces over ~200 ms+ in 50 ms lumps: the first piece alone, then a handful.
    assert texts[0].text == PIECES[0], "followers' first token is not held back"
    assert 3 <= len(texts) <= 12, [m.text for m in texts]
    last = texts[-1]
    assert last.complete and last.finish_reason == types_pb2.FINISH_REASON_LENGTH
    assert last.usage.completion_tokens == len(PIECES)
    assert sum(m.complete for m in store.messages) == 1


async def test_interval_zero_sends_every_piece_as_it_comes() -> None:
    _, store = await stream(0, PIECES[:5], 0.001)
    assert [m.text for m in store.messages[1:]] == [*PIECES[:5], ""]
    assert store.messages[-1].complete


async def test_text_still_gathered_when_the_stream_ends_goes_with_the_final_message() -> None:
    # Pieces far faster than the interval: all but the first ride on the final message.
    _, store = await stream(10_000, PIECES[:6], 0)
    assert [m.text for m in store.messages[1:]] == [PIECES[0], "".join(PIECES[1:6])]
    assert store.messages[-1].complete


@pytest.mark.parametrize("interval_ms", [-1, float("nan")])
def test_a_negative_interval_is_refused(interval_ms: float) -> None:
    with pytest.raises(ValueError):
        RouterSettings(cache_store_interval_ms=interval_ms)
