"""Single-flight: followers get the leader's chunks live, or are told it stopped."""

from __future__ import annotations

import asyncio

import pytest

from headrace.services.cache.flights import Final, FlightFailed, Flights


async def collect(flight_follow) -> list[object]:  # type: ignore[no-untyped-def]
    return [item async for item in flight_follow]


async def test_followers_receive_every_chunk_then_the_final() -> None:
    flights = Flights(start_timeout_s=5)
    flight = flights.open("k")
    early = asyncio.create_task(collect(flight.follow()))
    assert flights.claim("k") is flight
    await flight.add("a")
    late = asyncio.create_task(collect(flight.follow()))  # joins after the first chunk
    await asyncio.sleep(0)
    await flight.add("b")
    await flights.close(flight, Final(1, 3, 2))
    for task in (early, late):
        assert await task == ["a", "b", Final(1, 3, 2)]
    assert flights.get("k") is None


async def test_a_flight_that_stops_fails_its_followers() -> None:
    flights = Flights(start_timeout_s=5)
    flight = flights.open("k")
    assert flights.claim("k") is flight
    follower = asyncio.create_task(collect(flight.follow()))
    await flight.add("a")
    await flights.close(flight, None)
    with pytest.raises(FlightFailed):
        await follower


async def test_a_flight_nobody_starts_expires() -> None:
    flights = Flights(start_timeout_s=0.05)
    flight = flights.open("k")
    with pytest.raises(FlightFailed):
        await asyncio.wait_for(collect(flight.follow()), 2)
    assert flights.get("k") is None
    assert flights.claim("k") is None, "a late store no longer feeds the expired flight"


async def test_only_the_first_store_claims_a_flight() -> None:
    flights = Flights(start_timeout_s=5)
    flights.open("k")
    assert flights.claim("k") is not None
    assert flights.claim("k") is None
