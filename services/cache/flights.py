"""Single-flight: identical requests in flight at once run inference once.

The first request to miss a key opens a Flight; identical requests that look
the key up while it is open follow it and receive its chunks as the first
request's Store stream delivers them. The flight succeeds when that stream
completes, and fails when it ends without completing (the first request was
cancelled, failed or filtered) or does not start within `start_timeout_s`;
followers of a failed flight are told so (ABORTED), and generate themselves if
nothing had been sent to them yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


class FlightFailed(Exception):
    """The generation being shared stopped before it completed."""


@dataclass
class Final:
    """How a completed flight ended."""

    finish_reason: int
    prompt_tokens: int
    completion_tokens: int


@dataclass(eq=False)
class Flight:
    """One generation in progress, shared by everyone asking for its key."""

    key: str
    chunks: list[str] = field(default_factory=list)
    final: Final | None = None
    failed: bool = False
    started: bool = False
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def add(self, text: str) -> None:
        async with self._changed:
            self.chunks.append(text)
            self._changed.notify_all()

    async def finish(self, final: Final | None) -> None:
        """Complete (final given) or fail (None) the flight; wake every follower."""
        async with self._changed:
            if final is None:
                self.failed = True
            else:
                self.final = final
            self._changed.notify_all()

    async def follow(self) -> AsyncIterator[str | Final]:
        """Every chunk so far and to come, then the Final; FlightFailed if it stops."""
        sent = 0
        while True:
            async with self._changed:
                await self._changed.wait_for(
                    lambda sent=sent: (
                        len(self.chunks) > sent or self.final is not None or self.failed
                    )
                )
                pending = self.chunks[sent:]
                final, failed = self.final, self.failed
            for chunk in pending:
                yield chunk
            sent += len(pending)
            if failed:
                raise FlightFailed
            if final is not None and sent == len(self.chunks):
                yield final
                return


class Flights:
    """Open flights by key (one cache process coordinates them)."""

    def __init__(self, start_timeout_s: float) -> None:
        self._open: dict[str, Flight] = {}
        self._start_timeout = start_timeout_s
        self._expiring: set[asyncio.Task[None]] = set()

    def get(self, key: str) -> Flight | None:
        return self._open.get(key)

    def open(self, key: str) -> Flight:
        """A new flight for a key that just missed; it fails unless a Store starts soon."""
        flight = Flight(key)
        self._open[key] = flight
        asyncio.get_running_loop().call_later(self._start_timeout, self._expire, flight)
        return flight

    def _expire(self, flight: Flight) -> None:
        if not flight.started and self._open.get(flight.key) is flight:
            self._open.pop(flight.key, None)
            task = asyncio.ensure_future(flight.finish(None))
            self._expiring.add(task)
            task.add_done_callback(self._expiring.discard)

    def claim(self, key: str) -> Flight | None:
        """The flight a Store stream for `key` feeds (None if nobody opened one)."""
        flight = self._open.get(key)
        if flight is not None and not flight.started:
            flight.started = True
            return flight
        return None

    async def close(self, flight: Flight, final: Final | None) -> None:
        if self._open.get(flight.key) is flight:
            del self._open[flight.key]
        await flight.finish(final)
