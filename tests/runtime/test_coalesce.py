"""coalesced: a consumer that keeps up gets every item the moment it exists; one that
falls behind gets what arrived meanwhile as one item; nothing is lost or reordered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from headrace.services.runtime.coalesce import coalesced

END = "<end>"


def join(earlier: str, later: str) -> str | None:
    return None if earlier.endswith(END) else earlier + later


async def test_an_item_goes_at_once_when_the_consumer_waits_for_it() -> None:
    # The source produces its next item only after the consumer has the previous one:
    # a coalescer that held items back to gather more would never finish.
    delivered = asyncio.Event()

    async def lockstep() -> AsyncIterator[str]:
        for i in range(5):
            delivered.clear()
            yield str(i)
            await delivered.wait()

    got = []
    async with asyncio.timeout(2):
        async for item in coalesced(lockstep(), join):
            got.append(item)
            delivered.set()
    assert got == ["0", "1", "2", "3", "4"]


async def test_a_slow_consumer_gets_what_arrived_meanwhile_in_one_item() -> None:
    async def burst() -> AsyncIterator[str]:
        for i in range(50):
            yield f"{i},"
            if i % 10 == 9:
                await asyncio.sleep(0.001)
        yield END

    got = []
    async for item in coalesced(burst(), join):
        got.append(item)
        await asyncio.sleep(0.02)  # a consumer behind its producer
    assert "".join(got) == "".join(f"{i}," for i in range(50)) + END
    assert len(got) < 10


async def test_nothing_is_merged_after_the_item_that_ends_the_stream() -> None:
    async def two_streams() -> AsyncIterator[str]:
        for item in ["a", "b" + END, "c"]:
            yield item

    agen = coalesced(two_streams(), join)
    await asyncio.sleep(0)
    got = [item async for item in agen]
    assert got[-1] == "c" and "".join(got) == "ab" + END + "c"


async def test_the_sources_error_comes_after_the_items_before_it() -> None:
    async def failing() -> AsyncIterator[str]:
        yield "a"
        yield "b"
        raise ValueError("boom")

    got = []
    with pytest.raises(ValueError, match="boom"):
        async for item in coalesced(failing(), join):
            got.append(item)
    assert "".join(got) == "ab"


async def test_a_consumer_that_stops_early_cancels_the_source() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[str]:
        try:
            while True:
                yield "x"
                await asyncio.sleep(0.001)
        finally:
            closed.set()

    agen = coalesced(endless(), join)
    assert (await agen.__anext__()).startswith("x")
    await agen.aclose()
    assert closed.is_set()


async def test_read_ahead_is_bounded() -> None:
    produced = 0

    async def counting() -> AsyncIterator[str]:
        nonlocal produced
        for _ in range(1000):
            produced += 1
            yield "x"

    agen = coalesced(counting(), join, max_pending=8)
    taken = len(await agen.__anext__())
    await asyncio.sleep(0.05)  # the consumer stops reading
    assert taken <= 8
    assert produced - taken <= 8 + 1, "no more than max_pending read ahead"
    await agen.aclose()
