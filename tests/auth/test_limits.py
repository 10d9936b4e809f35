"""Rate limits (GCRA) and token quotas, in process and in Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from headrace.services.auth.limits import (
    KEY_PREFIX,
    Limits,
    MemoryLimitStore,
    Periods,
    RedisLimitStore,
    open_limits,
    reservation,
)
from headrace.services.auth.settings import TierLimits
from headrace.services.runtime.errors import ResourceExhausted

TIERS = {
    "limited": TierLimits(requests_per_minute=5),
    "metered": TierLimits(tokens_per_day=100, tokens_per_month=150),
    "unlimited": TierLimits(),
}


@pytest.fixture(scope="module")
async def redis_client() -> AsyncIterator[redis.Redis | None]:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/9", socket_connect_timeout=0.5)
    try:
        await client.ping()
    except (redis.RedisError, OSError):
        await client.aclose()
        yield None
        return
    yield client
    async for key in client.scan_iter(f"{KEY_PREFIX}*test-*"):
        await client.delete(key)
    await client.aclose()


@pytest.fixture(params=["memory", "redis"])
def limits(request: pytest.FixtureRequest, redis_client: redis.Redis | None) -> Limits:
    if request.param == "memory":
        return Limits(TIERS, MemoryLimitStore())
    if redis_client is None:
        pytest.skip("no Redis on 127.0.0.1:6379")
    return Limits(TIERS, RedisLimitStore(redis_client, timeout_s=1.0))


def subject() -> str:
    return f"test-{uuid.uuid4().hex}"


async def test_rate_limit_allows_the_burst_then_refuses_with_a_retry_hint(limits: Limits) -> None:
    who = subject()
    for _ in range(5):
        await limits.admit(who, "limited", 0)
    with pytest.raises(ResourceExhausted) as info:
        await limits.admit(who, "limited", 0)
    assert 0 < info.value.retry_after_s <= 12.0  # one request every 60/5 s
    assert "5 requests per minute" in info.value.message


async def test_concurrent_requests_never_pass_the_limit(limits: Limits) -> None:
    who = subject()
    outcomes = await asyncio.gather(
        *(limits.admit(who, "limited", 0) for _ in range(30)), return_exceptions=True
    )
    assert sum(1 for o in outcomes if not isinstance(o, Exception)) == 5


async def test_subjects_have_separate_limits(limits: Limits) -> None:
    a, b = subject(), subject()
    for _ in range(5):
        await limits.admit(a, "limited", 0)
    await limits.admit(b, "limited", 0)


async def test_token_reservation_refuses_the_request_that_would_pass_the_day_quota(
    limits: Limits,
) -> None:
    who = subject()
    assert await limits.admit(who, "metered", 60) == 60
    with pytest.raises(ResourceExhausted) as info:
        await limits.admit(who, "metered", 41)
    assert "per day" in info.value.message and info.value.retry_after_s > 0
    assert await limits.admit(who, "metered", 40) == 40
    day, month, tier = await limits.used(who)
    assert (day, month, tier) == (100, 100, "metered")


async def test_settling_replaces_the_reservation_by_real_use(limits: Limits) -> None:
    who = subject()
    reserved = await limits.admit(who, "metered", 90)
    await limits.settle(who, reserved, 12)
    assert (await limits.used(who))[:2] == (12, 12)
    assert await limits.admit(who, "metered", 88) == 88


async def test_a_settlement_sent_again_with_its_id_is_applied_once(limits: Limits) -> None:
    who = subject()
    first = await limits.admit(who, "metered", 90)
    second = await limits.admit(who, "metered", 5)
    settlement_id = uuid.uuid4().hex
    for _ in range(3):  # the router resends when it cannot tell whether one arrived
        await limits.settle(who, first, 12, settlement_id)
    await limits.settle(who, second, 1, uuid.uuid4().hex)  # another id: applied
    assert (await limits.used(who))[:2] == (13, 13)
    await limits.settle(who, second, 0)  # no id: applied every time
    await limits.settle(who, second, 0)
    assert (await limits.used(who))[:2] == (3, 3)


async def test_unlimited_tier_reserves_nothing(limits: Limits) -> None:
    who = subject()
    for _ in range(50):
        assert await limits.admit(who, "unlimited", 10_000) == 0


async def test_unknown_redis_falls_back_to_in_process_limits() -> None:
    limits, client = await open_limits(TIERS, "redis://127.0.0.1:1/0", 0.1)
    assert client is None
    who = subject()
    for _ in range(5):
        await limits.admit(who, "limited", 0)
    with pytest.raises(ResourceExhausted):
        await limits.admit(who, "limited", 0)


def test_periods_end_at_utc_midnight_and_month_start() -> None:
    when = dt.datetime(2026, 12, 31, 23, 0, tzinfo=dt.UTC)
    periods = Periods.now(when)
    assert (periods.day, periods.month) == ("2026-12-31", "2026-12")
    assert periods.day_left_s == 3600
    assert periods.month_left_s == 3600


async def test_a_high_rate_limit_keeps_microsecond_precision_in_redis(
    redis_client: redis.Redis | None,
) -> None:
    if redis_client is None:
        pytest.skip("no Redis on 127.0.0.1:6379")
    store = RedisLimitStore(redis_client, timeout_s=1.0)
    limits = Limits({"fast": TierLimits(requests_per_minute=1_000_000)}, store)
    who = subject()
    for _ in range(100):
        await limits.admit(who, "fast", 0)
    raw = await redis_client.get(f"{KEY_PREFIX}rate:{who}")
    assert raw is not None and raw.isdigit(), raw


async def test_a_request_refused_by_the_quota_does_not_use_up_the_rate_limit(
    limits: Limits,
) -> None:
    mixed = Limits(
        {"both": TierLimits(requests_per_minute=2, tokens_per_day=10)},
        limits._store,  # the backend of the parametrised fixture
    )
    who = subject()
    with pytest.raises(ResourceExhausted, match="token quota"):
        await mixed.admit(who, "both", 50)
    await mixed.admit(who, "both", 5)
    await mixed.admit(who, "both", 5)


def test_the_reservation_estimates_content_at_four_bytes_a_token() -> None:
    # The estimate the router used to make itself, now auth's: bytes // 4 + 1.
    assert reservation(content_bytes=40, reserve_tokens=100) == 111
    assert reservation(content_bytes=0, reserve_tokens=100) == 100
    assert reservation(content_bytes=7, reserve_tokens=-5) == 2
