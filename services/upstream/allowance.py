"""Free allowances: counted atomically across every router and upstream replica.

A request first reserves (one request, and its prompt's tokens plus max_tokens) in
every window its model's allowance limits; if any would go past its limit, nothing is
taken and the request goes elsewhere. When it ends, the reservation is settled with the
tokens really used. A 429 from the provider sets a shared cool-down: no request goes
to that model until it passes. In Redis the check-and-take is one Lua script, so
concurrent reservations from several processes never overshoot together; without
Redis an in-process store does the same for this process alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import redis.asyncio as redis
from redis.exceptions import RedisError

from headrace.services.runtime.errors import ResourceExhausted
from headrace.services.runtime.logs import get_logger
from headrace.services.upstream.settings import Allowance

log = get_logger(__name__)


@dataclass(frozen=True)
class Window:
    """One limit of an allowance: what it counts, over which calendar period."""

    name: str
    """The allowance field: requests_per_minute, tokens_per_day, ..."""
    counts: str
    """"requests" or "tokens"."""
    period: str
    """"minute", "day" or "month"."""

    def period_id(self, now: float, zone: ZoneInfo) -> str:
        if self.period == "minute":
            return str(int(now // 60))
        local = datetime.fromtimestamp(now, zone)
        return local.strftime("%Y-%m-%d" if self.period == "day" else "%Y-%m")

    def seconds_left(self, now: float, zone: ZoneInfo) -> float:
        """Until the period ends (when the count starts again from zero)."""
        if self.period == "minute":
            return 60 - now % 60
        local = datetime.fromtimestamp(now, zone)
        if self.period == "day":
            start = local.replace(hour=0, minute=0, second=0, microsecond=0)
            end = start + timedelta(days=1)
        else:
            year, month = (
                (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
            )
            end = datetime(year, month, 1, tzinfo=zone)
        return max(end.timestamp() - now, 0.0)

    @property
    def ttl_seconds(self) -> int:
        """How long a counter is kept: its period and a margin (periods are calendar)."""
        return {"minute": 120, "day": 2 * 86400, "month": 62 * 86400}[self.period]


WINDOWS = (
    Window("requests_per_minute", "requests", "minute"),
    Window("requests_per_day", "requests", "day"),
    Window("tokens_per_day", "tokens", "day"),
    Window("tokens_per_month", "tokens", "month"),
)


@dataclass(frozen=True)
class Counter:
    """One window's counter for one model in the current period."""

    window: Window
    key: str
    limit: int
    amount: int
    """What this request takes from it."""


@dataclass
class Reservation:
    """What one request took; settle() replaces the tokens by those really used."""

    model: str
    counters: list[Counter]
    tokens: int
    settled: bool = False


@dataclass(frozen=True)
class Usage:
    """A window's use in the current period, for `headrace upstreams` and metrics."""

    window: str
    used: int
    limit: int
    resets_in_s: float

    @property
    def left(self) -> int:
        return max(self.limit - self.used, 0)


class Refused(Exception):
    """Internal: the store refused a reservation (which counter, or the cool-down)."""

    def __init__(self, index: int, value: float) -> None:
        self.index = index
        self.value = value


class AllowanceStore(Protocol):
    async def take(self, cooldown_key: str, counters: list[Counter]) -> None:
        """Take every counter's amount, or nothing: Refused(-1, ms) while cooling
        down, Refused(i, used) when counter i would pass its limit."""

    async def add(self, key: str, amount: int, ttl_s: int) -> None: ...

    async def cool_down(self, key: str, ms: int) -> None: ...

    async def get(self, keys: list[str]) -> list[int]: ...

    async def cooldown_ms(self, key: str) -> int: ...


_TAKE = """
local cool = redis.call('PTTL', KEYS[1])
if cool > 0 then return {-1, cool} end
local n = #KEYS - 1
for i = 1, n do
  local used = tonumber(redis.call('GET', KEYS[i + 1]) or '0')
  if used + tonumber(ARGV[3 * i - 1]) > tonumber(ARGV[3 * i - 2]) then return {i - 1, used} end
end
for i = 1, n do
  redis.call('INCRBY', KEYS[i + 1], ARGV[3 * i - 1])
  redis.call('EXPIRE', KEYS[i + 1], ARGV[3 * i])
end
return {-2, 0}
"""

# Only ever lengthens a cool-down (two routers seeing two 429s keep the later end).
_COOL = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
return 1
"""


class RedisAllowanceStore:
    """Counters in Redis, shared by every process that uses the same Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._take = client.register_script(_TAKE)
        self._cool = client.register_script(_COOL)

    async def take(self, cooldown_key: str, counters: list[Counter]) -> None:
        args: list[int] = []
        for c in counters:
            args += [c.limit, c.amount, c.window.ttl_seconds]
        index, value = await self._take(keys=[cooldown_key, *(c.key for c in counters)], args=args)
        if int(index) != -2:
            raise Refused(int(index), float(value))

    async def add(self, key: str, amount: int, ttl_s: int) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.incrby(key, amount)
            pipe.expire(key, ttl_s)
            await pipe.execute()

    async def cool_down(self, key: str, ms: int) -> None:
        await self._cool(keys=[key], args=[ms])

    async def get(self, keys: list[str]) -> list[int]:
        values = await self._client.mget(keys) if keys else []
        return [int(v or 0) for v in values]

    async def cooldown_ms(self, key: str) -> int:
        return max(int(await self._client.pttl(key)), 0)


@dataclass
class MemoryAllowanceStore:
    """Counters in this process (no Redis): exact for one replica, not shared."""

    clock: Callable[[], float] = time.monotonic
    _counts: dict[str, tuple[int, float]] = field(default_factory=dict)
    _cool: dict[str, float] = field(default_factory=dict)

    def _value(self, key: str) -> int:
        value, until = self._counts.get(key, (0, 0.0))
        return value if until > self.clock() else 0

    async def take(self, cooldown_key: str, counters: list[Counter]) -> None:
        # No await between the checks and the increments: atomic on the event loop.
        ms = await self.cooldown_ms(cooldown_key)
        if ms > 0:
            raise Refused(-1, ms)
        for i, c in enumerate(counters):
            if self._value(c.key) + c.amount > c.limit:
                raise Refused(i, self._value(c.key))
        for c in counters:
            self._counts[c.key] = (
                self._value(c.key) + c.amount,
                self.clock() + c.window.ttl_seconds,
            )

    async def add(self, key: str, amount: int, ttl_s: int) -> None:
        self._counts[key] = (self._value(key) + amount, self.clock() + ttl_s)

    async def cool_down(self, key: str, ms: int) -> None:
        self._cool[key] = max(self._cool.get(key, 0.0), self.clock() + ms / 1000)

    async def get(self, keys: list[str]) -> list[int]:
        return [self._value(k) for k in keys]

    async def cooldown_ms(self, key: str) -> int:
        return max(math.ceil((self._cool.get(key, 0.0) - self.clock()) * 1000), 0)


class Allowances:
    """Reservations against each hosted model's allowance, and its 429 cool-down."""

    def __init__(
        self,
        store: AllowanceStore,
        limits: dict[str, Allowance],
        prefix: str = "headrace:upstream",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._limits = limits
        self._prefix = prefix
        self._clock = clock

    def _key(self, model: str, window: Window, now: float, zone: ZoneInfo) -> str:
        return f"{self._prefix}:allowance:{model}:{window.name}:{window.period_id(now, zone)}"

    def cooldown_key(self, model: str) -> str:
        return f"{self._prefix}:cooldown:{model}"

    def _counters(self, model: str, tokens: int, now: float) -> list[Counter]:
        allowance = self._limits.get(model, Allowance())
        zone = ZoneInfo(allowance.timezone)
        out = []
        for window in WINDOWS:
            limit = getattr(allowance, window.name)
            if limit is None:
                continue
            amount = 1 if window.counts == "requests" else tokens
            out.append(Counter(window, self._key(model, window, now, zone), limit, amount))
        return out

    async def reserve(self, model: str, tokens: int) -> Reservation:
        """Take one request and `tokens` from every limited window of `model`, or
        ResourceExhausted naming the spent window (or the cool-down) and when it ends."""
        now = self._clock()
        counters = self._counters(model, tokens, now)
        try:
            await self.store.take(self.cooldown_key(model), counters)
        except Refused as refused:
            if refused.index < 0:
                seconds = refused.value / 1000
                raise ResourceExhausted(
                    f"hosted model {model!r} is cooling down after its provider answered "
                    f"429; it is tried again in {seconds:.1f}s",
                    retry_after_s=seconds,
                ) from None
            counter = counters[refused.index]
            zone = ZoneInfo(self._limits[model].timezone)
            resets = counter.window.seconds_left(now, zone)
            raise ResourceExhausted(
                f"hosted model {model!r}: free allowance {counter.window.name}="
                f"{counter.limit} is spent ({int(refused.value)} used); it resets in "
                f"{resets:.0f}s",
                retry_after_s=resets,
            ) from None
        return Reservation(model, counters, tokens)

    async def settle(self, reservation: Reservation, used_tokens: int, *, reached: bool) -> None:
        """Replace the reserved tokens by those used; a request that never reached the
        provider (it could not be connected) gives its request count back too."""
        if reservation.settled:
            return
        reservation.settled = True
        for c in reservation.counters:
            delta = (used_tokens - reservation.tokens) if c.window.counts == "tokens" else 0
            if c.window.counts == "requests" and not reached:
                delta = -1
            if delta:
                try:
                    await self.store.add(c.key, delta, c.window.ttl_seconds)
                except (RedisError, OSError) as exc:
                    log.error("allowance_not_settled", model=reservation.model, error=str(exc))

    async def cool_down(self, model: str, seconds: float) -> None:
        """No request goes to `model` for `seconds` (shared by every replica)."""
        await self.store.cool_down(self.cooldown_key(model), max(math.ceil(seconds * 1000), 1))

    async def usage(self, model: str) -> list[Usage]:
        """Each limited window's use in its current period."""
        now = self._clock()
        counters = self._counters(model, 0, now)
        values = await self.store.get([c.key for c in counters])
        zone = ZoneInfo(self._limits.get(model, Allowance()).timezone)
        return [
            Usage(c.window.name, used, c.limit, c.window.seconds_left(now, zone))
            for c, used in zip(counters, values, strict=True)
        ]

    async def cooldown_s(self, model: str) -> float:
        return await self.store.cooldown_ms(self.cooldown_key(model)) / 1000
