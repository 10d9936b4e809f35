"""Per-subject rate limits and token quotas.

Rate limits use GCRA (the generic cell rate algorithm): a subject with a limit
of N requests per minute may send N at once, then one every 60/N seconds.
Token quotas count prompt + completion tokens per UTC day and month. A request
reserves its worst case (prompt estimate + max_tokens) at admission, so the
request that would exceed a quota is the one refused; the reservation is
settled with the real count when the response ends.

Both run as Lua scripts in Redis, so they are atomic and every auth replica
(and every gateway sharing the Redis) sees the same counts; the scripts read
Redis's clock, so replicas need not agree on time. With no Redis at start, an
in-process store does the same (logged). Redis failing later: the call falls
back to the in-process store, with one warning per outage.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

import redis.asyncio as redis
from prometheus_client import Counter
from redis.exceptions import RedisError

from headrace.services.auth.settings import TierLimits
from headrace.services.runtime.errors import ResourceExhausted
from headrace.services.runtime.logs import get_logger
from headrace.services.runtime.redis_client import connect_redis

log = get_logger(__name__)

QUOTA_REJECTIONS = Counter(
    "headrace_auth_quota_rejections_total",
    "Requests refused by a limit, by kind (rate, tokens_day, tokens_month).",
    ["kind", "tier"],
)

KEY_PREFIX = "headrace:limits:v1:"

# One round trip per request. KEYS: rate (GCRA theoretical arrival time, µs),
# tokens today, tokens this month, tier. ARGV: emission interval µs (0: no
# rate limit), burst tolerance µs, tokens to reserve, day limit, month limit
# (0: none), day ttl s, month ttl s, tier name.
# Returns {0, 0} admitted, {1, wait_us} rate limited, {2, 0} day quota, {3, 0}
# month quota. Nothing is taken unless everything passes. Times come from
# Redis's clock; stored as integers (string.format) so no precision is lost.
ADMIT_LUA = """
local interval = tonumber(ARGV[1])
local new_tat = nil
local new_tat_ttl_ms = 0
if interval > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local tat = tonumber(redis.call('GET', KEYS[1]) or now)
  if tat < now then tat = now end
  local allow_at = tat - tonumber(ARGV[2])
  if now < allow_at then return {1, allow_at - now} end
  new_tat = tat + interval
  new_tat_ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
end
local want = tonumber(ARGV[3])
if want > 0 then
  local day = tonumber(redis.call('GET', KEYS[2]) or '0')
  local month = tonumber(redis.call('GET', KEYS[3]) or '0')
  if tonumber(ARGV[4]) > 0 and day + want > tonumber(ARGV[4]) then return {2, 0} end
  if tonumber(ARGV[5]) > 0 and month + want > tonumber(ARGV[5]) then return {3, 0} end
  redis.call('INCRBY', KEYS[2], want)
  redis.call('EXPIRE', KEYS[2], ARGV[6])
  redis.call('INCRBY', KEYS[3], want)
  redis.call('EXPIRE', KEYS[3], ARGV[7])
end
if new_tat then
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', new_tat_ttl_ms))
end
redis.call('SET', KEYS[4], ARGV[8], 'EX', ARGV[7])
return {0, 0}
"""

SETTLE_LUA = """
if ARGV[2] ~= '' and not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[3]) then
  return 0
end
for i = 1, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[1]) end
end
return 1
"""

ADMITTED, RATE_LIMITED, DAY_QUOTA, MONTH_QUOTA = 0, 1, 2, 3

SETTLED_TTL_S = 86_400
"""How long Redis remembers a settlement id (a settlement sent again later than this
would be applied twice; the router resends within seconds)."""
SETTLED_REMEMBERED = 100_000
"""Settlement ids the in-process fallback remembers."""


@dataclass(frozen=True)
class Periods:
    """The current UTC day and month, and the seconds until each ends."""

    day: str
    month: str
    day_left_s: float
    month_left_s: float

    @classmethod
    def now(cls, when: dt.datetime | None = None) -> Periods:
        when = when or dt.datetime.now(dt.UTC)
        tomorrow = (when + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        first = when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        next_month = (first + dt.timedelta(days=32)).replace(day=1)
        return cls(
            day=f"{when:%Y-%m-%d}",
            month=f"{when:%Y-%m}",
            day_left_s=(tomorrow - when).total_seconds(),
            month_left_s=(next_month - when).total_seconds(),
        )


BYTES_PER_TOKEN = 4
"""The token estimate of content not yet tokenized, as the sanitizer's size limit counts."""


def reservation(content_bytes: int, reserve_tokens: int) -> int:
    """Tokens to reserve for one request: its content estimated at 4 bytes a token,
    plus what the caller reserves for the answer (its max_tokens)."""
    estimate = content_bytes // BYTES_PER_TOKEN + 1 if content_bytes > 0 else 0
    return estimate + max(reserve_tokens, 0)


class LimitStore(Protocol):
    """Where counters live."""

    async def admit(
        self, subject: str, tier: str, tokens: int, limits: TierLimits, periods: Periods
    ) -> tuple[int, float]:
        """Take one request and reserve tokens, all or nothing: (outcome, wait seconds)."""

    async def settle(
        self, subject: str, delta: int, periods: Periods, settlement_id: str = ""
    ) -> None: ...

    async def used(self, subject: str, periods: Periods) -> tuple[int, int, str]:
        """Tokens used today, this month, and the tier of the subject's last request."""


def _gcra_us(rpm: int) -> tuple[int, int]:
    """Emission interval and burst tolerance in microseconds (0, 0: no limit)."""
    if not rpm:
        return 0, 0
    interval = 60_000_000 // rpm
    return interval, interval * (rpm - 1)


@dataclass
class MemoryLimitStore:
    """Counters in this process, for when no Redis answers."""

    _tat: dict[str, int] = field(default_factory=dict)
    _tokens: dict[str, int] = field(default_factory=dict)
    _tiers: dict[str, str] = field(default_factory=dict)
    _settled: OrderedDict[str, None] = field(default_factory=OrderedDict)
    """Settlement ids applied (the most recent SETTLED_REMEMBERED)."""

    async def admit(
        self, subject: str, tier: str, tokens: int, limits: TierLimits, periods: Periods
    ) -> tuple[int, float]:
        interval, tolerance = _gcra_us(limits.requests_per_minute)
        new_tat = None
        if interval:
            now = time.monotonic_ns() // 1000
            tat = max(self._tat.get(subject, now), now)
            if now < tat - tolerance:
                return RATE_LIMITED, (tat - tolerance - now) / 1e6
            new_tat = tat + interval
        day_key, month_key = f"{subject}:d:{periods.day}", f"{subject}:m:{periods.month}"
        if tokens:
            day, month = self._tokens.get(day_key, 0), self._tokens.get(month_key, 0)
            if limits.tokens_per_day and day + tokens > limits.tokens_per_day:
                return DAY_QUOTA, 0.0
            if limits.tokens_per_month and month + tokens > limits.tokens_per_month:
                return MONTH_QUOTA, 0.0
            self._tokens[day_key] = day + tokens
            self._tokens[month_key] = month + tokens
        if new_tat is not None:
            self._tat[subject] = new_tat
        self._tiers[subject] = tier
        return ADMITTED, 0.0

    async def settle(
        self, subject: str, delta: int, periods: Periods, settlement_id: str = ""
    ) -> None:
        if settlement_id:
            if settlement_id in self._settled:
                return
            self._settled[settlement_id] = None
            while len(self._settled) > SETTLED_REMEMBERED:
                self._settled.popitem(last=False)
        for key in (f"{subject}:d:{periods.day}", f"{subject}:m:{periods.month}"):
            if key in self._tokens:
                self._tokens[key] += delta

    async def used(self, subject: str, periods: Periods) -> tuple[int, int, str]:
        return (
            self._tokens.get(f"{subject}:d:{periods.day}", 0),
            self._tokens.get(f"{subject}:m:{periods.month}", 0),
            self._tiers.get(subject, ""),
        )


class RedisLimitStore:
    """Counters in Redis, updated by Lua scripts (atomic across replicas)."""

    def __init__(self, client: redis.Redis, timeout_s: float) -> None:
        self._client = client
        self._timeout = timeout_s
        self._admit_script = client.register_script(ADMIT_LUA)
        self._settle_script = client.register_script(SETTLE_LUA)

    @staticmethod
    def _keys(subject: str, periods: Periods) -> list[str]:
        return [
            f"{KEY_PREFIX}rate:{subject}",
            f"{KEY_PREFIX}tokens:{subject}:d:{periods.day}",
            f"{KEY_PREFIX}tokens:{subject}:m:{periods.month}",
            f"{KEY_PREFIX}tier:{subject}",
        ]

    async def admit(
        self, subject: str, tier: str, tokens: int, limits: TierLimits, periods: Periods
    ) -> tuple[int, float]:
        interval, tolerance = _gcra_us(limits.requests_per_minute)
        # asyncio.timeout, not wait_for: on every request's path, and wait_for wraps
        # the call in a task of its own (one more event-loop turn) on Python 3.11.
        async with asyncio.timeout(self._timeout):
            outcome, wait_us = await self._admit_script(
                keys=self._keys(subject, periods),
                args=[
                    interval,
                    tolerance,
                    tokens,
                    limits.tokens_per_day,
                    limits.tokens_per_month,
                    math.ceil(periods.day_left_s) + 3600,
                    math.ceil(periods.month_left_s) + 3600,
                    tier,
                ],
            )
        return int(outcome), int(wait_us) / 1e6

    async def settle(
        self, subject: str, delta: int, periods: Periods, settlement_id: str = ""
    ) -> None:
        keys = [*self._keys(subject, periods)[1:3], f"{KEY_PREFIX}settled:{settlement_id}"]
        await asyncio.wait_for(
            self._settle_script(keys=keys, args=[delta, settlement_id, SETTLED_TTL_S]),
            self._timeout,
        )

    async def used(self, subject: str, periods: Periods) -> tuple[int, int, str]:
        day, month, tier = await asyncio.wait_for(
            self._client.mget(self._keys(subject, periods)[1:]), self._timeout
        )
        return int(day or 0), int(month or 0), (tier or b"").decode()


class Limits:
    """Rate limits and token quotas by tier, on Redis with an in-process fallback."""

    def __init__(self, tiers: dict[str, TierLimits], store: LimitStore) -> None:
        self.tiers = tiers
        self._store = store
        self._fallback = MemoryLimitStore()
        self._failing = False

    def tier(self, name: str) -> TierLimits:
        """A tier's limits; an unknown tier gets the strictest one configured."""
        if name in self.tiers:
            return self.tiers[name]
        return self.tiers.get("free", TierLimits())

    async def _call(self, op: str, *args: object) -> object:
        if self._store is not self._fallback:
            try:
                result = await getattr(self._store, op)(*args)
            except (RedisError, OSError, TimeoutError) as exc:
                if not self._failing:
                    log.warning(
                        "redis_unavailable_limits_in_process", error=str(exc) or type(exc).__name__
                    )
                self._failing = True
            else:
                if self._failing:
                    log.info("redis_recovered_limits")
                self._failing = False
                return result
        return await getattr(self._fallback, op)(*args)

    async def admit(self, subject: str, tier: str, reserve_tokens: int) -> int:
        """Take one request and reserve tokens (returned); ResourceExhausted with
        retry-after when a limit would be passed. Nothing is taken on refusal."""
        limits = self.tier(tier)
        reserve = max(int(reserve_tokens), 0)
        if not (limits.tokens_per_day or limits.tokens_per_month):
            reserve = 0
        if not limits.requests_per_minute and not reserve:
            return 0
        periods = Periods.now()
        outcome, wait = await self._call("admit", subject, tier, reserve, limits, periods)  # type: ignore[misc]
        if outcome == ADMITTED:
            return reserve
        if outcome == RATE_LIMITED:
            QUOTA_REJECTIONS.labels("rate", tier).inc()
            raise ResourceExhausted(
                f"rate limit: {limits.requests_per_minute} requests per minute for tier "
                f"{tier!r}; retry in {wait:.1f} s",
                retry_after_s=wait,
            )
        per, limit, left = (
            ("day", limits.tokens_per_day, periods.day_left_s)
            if outcome == DAY_QUOTA
            else ("month", limits.tokens_per_month, periods.month_left_s)
        )
        QUOTA_REJECTIONS.labels(f"tokens_{per}", tier).inc()
        raise ResourceExhausted(
            f"token quota: this request could use {reserve} tokens, which would pass the "
            f"{limit} tokens per {per} of tier {tier!r}; lower max_tokens or wait for the "
            f"quota to reset",
            retry_after_s=left,
        )

    async def settle(self, subject: str, reserved: int, used: int, settlement_id: str = "") -> None:
        """Replace a reservation by what was really used (once per settlement id)."""
        if reserved != used:
            delta = int(used) - int(reserved)
            await self._call("settle", subject, delta, Periods.now(), settlement_id)

    async def used(self, subject: str) -> tuple[int, int, str]:
        """Tokens used today, this month, and the subject's last tier ("" if unknown)."""
        return await self._call("used", subject, Periods.now())  # type: ignore[return-value]


async def open_limits(
    tiers: dict[str, TierLimits], url: str, timeout_s: float
) -> tuple[Limits, redis.Redis | None]:
    """Limits on Redis when it answers a PING now, otherwise in-process (logged)."""
    client, error = await connect_redis(url)
    if client is None:
        log.warning("redis_unreachable_limits_in_process", url=url, error=error)
        return Limits(tiers, MemoryLimitStore()), None
    log.info("limits_backend_redis", url=url)
    return Limits(tiers, RedisLimitStore(client, timeout_s)), client
