"""Free allowances: reserve before, settle after, never past a limit, in process and in
Redis (where several processes share them), and the 429 cool-down."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as redis

from headrace.services.runtime.errors import ResourceExhausted
from headrace.services.upstream.allowance import (
    WINDOWS,
    Allowances,
    MemoryAllowanceStore,
    RedisAllowanceStore,
)
from headrace.services.upstream.settings import Allowance


@pytest.fixture
async def redis_client() -> AsyncIterator[redis.Redis | None]:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/9", socket_connect_timeout=0.5)
    try:
        await client.ping()
    except (redis.RedisError, OSError):
        await client.aclose()
        yield None
        return
    yield client
    async for key in client.scan_iter("headrace:test:*"):
        await client.delete(key)
    await client.aclose()


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest, redis_client: redis.Redis | None):  # type: ignore[no-untyped-def]
    """A factory of Allowances over one shared store (each call: another 'process')."""
    prefix = f"headrace:test:{uuid.uuid4().hex[:8]}"
    if request.param == "memory":
        store = MemoryAllowanceStore()
        return lambda limits: Allowances(store, limits, prefix)
    if redis_client is None:
        pytest.skip("no Redis on 127.0.0.1:6379")
    return lambda limits: Allowances(RedisAllowanceStore(redis_client), limits, prefix)


async def test_concurrent_reservations_never_pass_a_request_limit(make) -> None:  # type: ignore[no-untyped-def]
    limits = {"m": Allowance(requests_per_day=5)}
    a, b = make(limits), make(limits)  # two replicas sharing the store

    async def one(allowances: Allowances) -> bool:
        try:
            await allowances.reserve("m", 10)
        except ResourceExhausted:
            return False
        return True

    results = await asyncio.gather(*(one(a if i % 2 else b) for i in range(12)))
    assert sum(results) == 5
    usage = {u.window: u for u in await a.usage("m")}
    assert usage["requests_per_day"].used == 5 and usage["requests_per_day"].left == 0


async def test_settling_replaces_reserved_tokens_by_used_ones(make) -> None:  # type: ignore[no-untyped-def]
    allowances = make({"m": Allowance(tokens_per_day=1000, tokens_per_month=5000)})
    reservation = await allowances.reserve("m", 300)
    assert {u.window: u.used for u in await allowances.usage("m")} == {
        "tokens_per_day": 300,
        "tokens_per_month": 300,
    }
    await allowances.settle(reservation, 42, reached=True)
    await allowances.settle(reservation, 42, reached=True)  # once only
    assert {u.window: u.used for u in await allowances.usage("m")} == {
        "tokens_per_day": 42,
        "tokens_per_month": 42,
    }


async def test_a_reservation_that_would_pass_a_token_limit_takes_nothing(make) -> None:  # type: ignore[no-untyped-def]
    allowances = make({"m": Allowance(requests_per_minute=10, tokens_per_day=100)})
    await allowances.reserve("m", 80)
    with pytest.raises(ResourceExhausted, match="tokens_per_day=100 is spent"):
        await allowances.reserve("m", 30)
    used = {u.window: u.used for u in await allowances.usage("m")}
    assert used == {"requests_per_minute": 1, "tokens_per_day": 80}


async def test_a_request_that_never_reached_the_provider_gives_its_count_back(make) -> None:  # type: ignore[no-untyped-def]
    allowances = make({"m": Allowance(requests_per_day=1)})
    reservation = await allowances.reserve("m", 5)
    await allowances.settle(reservation, 0, reached=False)
    await allowances.reserve("m", 5)  # the one request is available again


async def test_a_cool_down_refuses_every_replica_until_it_passes(make) -> None:  # type: ignore[no-untyped-def]
    limits = {"m": Allowance()}
    a, b = make(limits), make(limits)
    await a.cool_down("m", 0.3)
    with pytest.raises(ResourceExhausted, match="cooling down") as refused:
        await b.reserve("m", 1)
    assert refused.value.retry_after_s is not None and 0 < refused.value.retry_after_s <= 0.3
    await asyncio.sleep(0.35)
    await b.reserve("m", 1)


def test_periods_are_calendar_minutes_days_and_months_in_the_configured_zone() -> None:
    from zoneinfo import ZoneInfo

    at = datetime(2026, 12, 31, 23, 30, tzinfo=UTC).timestamp()
    day, month = WINDOWS[1], WINDOWS[3]
    assert day.period_id(at, ZoneInfo("UTC")) == "2026-12-31"
    assert month.period_id(at, ZoneInfo("UTC")) == "2026-12"
    assert day.seconds_left(at, ZoneInfo("UTC")) == 1800
    # In Tokyo it is already the next day (and year).
    assert day.period_id(at, ZoneInfo("Asia/Tokyo")) == "2027-01-01"
    assert month.seconds_left(at, ZoneInfo("UTC")) == 1800
