"""Fewer stream messages when the consumer is behind, never a later one.

A stream that yields one message per token costs every hop (the service, Envoy,
the client) the fixed price of a message per token. When the consumer keeps up
that is the price of the lowest latency; when it falls behind (a slow client, a
busy event loop, a full HTTP/2 window), the deltas produced meanwhile wait
anyway, and they can as well travel together. `coalesced` reads its source ahead
in a task of its own and, each time the consumer asks, hands over everything that
has arrived since, merged into one item: a consumer that keeps up gets every
item as soon as it exists, one that is behind gets fewer, larger ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

T = TypeVar("T")


async def coalesced(
    source: AsyncIterator[T],
    merge: Callable[[T, T], T | None],
    *,
    max_pending: int = 64,
) -> AsyncIterator[T]:
    """The source's items, those that arrived while the consumer was busy merged.

    merge(earlier, later) is the one item that stands for both, or None when they
    must stay apart (the earlier one ends the stream). At most `max_pending` items
    are read ahead, so a source with its own backpressure still feels a consumer
    that stops reading. The source's error comes after the items before it; the
    source is closed (cancelled) when the consumer stops early.
    """
    pending: deque[T] = deque()
    arrived = asyncio.Event()
    room = asyncio.Event()
    room.set()
    failure: list[BaseException] = []
    finished = False

    async def read_ahead() -> None:
        nonlocal finished
        try:
            async for item in source:
                pending.append(item)
                arrived.set()
                if len(pending) >= max_pending:
                    room.clear()
                    await room.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, after what came before
            failure.append(exc)
        finally:
            finished = True
            arrived.set()

    reader = asyncio.create_task(read_ahead())
    try:
        while True:
            if not pending:
                if finished:
                    break
                arrived.clear()
                await arrived.wait()
                continue
            item = pending.popleft()
            while pending and (merged := merge(item, pending[0])) is not None:
                item = merged
                pending.popleft()
            room.set()
            yield item
        if failure:
            raise failure[0]
    finally:
        if not reader.done():
            reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
