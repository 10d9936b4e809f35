"""The hosted models this service answers for: each one's endpoint, allowance and
metrics, and one generation as reserve → stream → settle. No protobuf here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.exceptions import RedisError

from headrace.services.runtime.errors import NotFound, ResourceExhausted, Unavailable
from headrace.services.runtime.logs import get_logger
from headrace.services.upstream import metrics
from headrace.services.upstream.allowance import Allowances, Reservation
from headrace.services.upstream.provider import (
    Delta,
    OpenAIUpstream,
    RateLimited,
    UpstreamUnavailable,
)
from headrace.services.upstream.tokens import estimate_tokens

log = get_logger(__name__)


@dataclass(frozen=True)
class Ask:
    """One generation in provider terms."""

    messages: list[dict[str, str]]
    options: dict[str, object]
    """chat_request_body's keyword arguments (max_tokens, temperature, ...)."""
    max_tokens: int


class HostedRegistry:
    """Hosted models by name (aliases too), their allowances, and their calls."""

    def __init__(self, upstreams: list[OpenAIUpstream], allowances: Allowances) -> None:
        self.upstreams = upstreams
        self.allowances = allowances
        self._by_name = {name: u for u in upstreams for name in (u.spec.name, *u.spec.aliases)}
        self._background: set[asyncio.Task[None]] = set()

    def get(self, name: str) -> OpenAIUpstream:
        upstream = self._by_name.get(name)
        if upstream is None:
            known = ", ".join(u.spec.name for u in self.upstreams) or "none configured"
            raise NotFound(f"unknown hosted model {name!r}; hosted models: {known}")
        return upstream

    async def generate(self, upstream: OpenAIUpstream, ask: Ask) -> AsyncIterator[Delta]:
        """Reserve from the allowance, stream the provider's answer, settle the tokens
        used (whatever the outcome, off the request path)."""
        spec = upstream.spec
        labels = {"upstream": spec.name, "provider": spec.provider}
        prompt_estimate = sum(estimate_tokens(m["content"]) + 4 for m in ask.messages)
        try:
            reservation = await self.allowances.reserve(spec.name, prompt_estimate + ask.max_tokens)
        except ResourceExhausted:
            metrics.REQUESTS.labels(**labels, outcome="exhausted").inc()
            raise
        except (RedisError, OSError) as exc:
            metrics.REQUESTS.labels(**labels, outcome="error").inc()
            raise Unavailable(
                f"{upstream.where}: its allowance cannot be checked (Redis: {exc}); "
                "it is skipped until Redis answers"
            ) from None
        started = time.perf_counter()
        used, reached, outcome, first = 0, True, "cancelled", True
        try:
            async for delta in upstream.stream(ask.messages, ask.options):
                if first and delta.text:
                    first = False
                    metrics.FIRST_TOKEN.labels(**labels).observe(time.perf_counter() - started)
                if delta.finish_reason is not None:
                    used = delta.prompt_tokens + delta.completion_tokens
                    metrics.TOKENS.labels(**labels, direction="in").inc(delta.prompt_tokens)
                    metrics.TOKENS.labels(**labels, direction="out").inc(delta.completion_tokens)
                    outcome = "ok"
                yield delta
        except RateLimited as exc:
            outcome = "rate_limited"
            metrics.RATE_LIMITED.labels(**labels).inc()
            wait = exc.retry_after_s if exc.retry_after_s is not None else spec.cooldown_seconds
            await self.allowances.cool_down(spec.name, wait)
            log.warning("upstream_rate_limited", upstream=spec.name, retry_after_s=wait)
            raise ResourceExhausted(exc.message, retry_after_s=wait) from None
        except UpstreamUnavailable as exc:
            outcome, reached = "error", exc.reached
            metrics.ERRORS.labels(**labels).inc()
            log.warning("upstream_failed", upstream=spec.name, error=exc.message)
            raise
        finally:
            metrics.REQUESTS.labels(**labels, outcome=outcome).inc()
            metrics.LATENCY.labels(**labels).observe(time.perf_counter() - started)
            # Settled in a task of its own: a cancelled request cannot await here.
            task = asyncio.create_task(self._settle(reservation, used, reached))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _settle(self, reservation: Reservation, used: int, reached: bool) -> None:
        await self.allowances.settle(reservation, used, reached=reached)
        await self.refresh_gauges(reservation.model)

    async def refresh_gauges(self, name: str | None = None) -> None:
        """The allowance gauges from the shared counters (all replicas' use)."""
        for upstream in self.upstreams:
            spec = upstream.spec
            if name is not None and spec.name != name:
                continue
            try:
                usages = await self.allowances.usage(spec.name)
            except (RedisError, OSError) as exc:
                log.warning("allowance_unreadable", upstream=spec.name, error=str(exc))
                continue
            for usage in usages:
                labels = {"upstream": spec.name, "provider": spec.provider, "window": usage.window}
                metrics.ALLOWANCE_LIMIT.labels(**labels).set(usage.limit)
                metrics.ALLOWANCE_USED.labels(**labels).set(usage.used)
                metrics.ALLOWANCE_LEFT.labels(**labels).set(usage.left)

    async def close(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.gather(*(u.close() for u in self.upstreams))
