"""`headrace upstreams`: each hosted model's allowances, used and left in the current
minute, day and month, read from the counters every replica shares (Redis)."""

from __future__ import annotations

from headrace.services.runtime.redis_client import connect_redis
from headrace.services.upstream.allowance import Allowances, RedisAllowanceStore
from headrace.services.upstream.settings import UpstreamSettings


def _duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f}d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds:.0f}s"


async def allowance_report(settings: UpstreamSettings) -> list[str]:
    """The report's lines. Keys are shown as present or absent, never their value."""
    if not settings.hosted_models:
        return ["no hosted models configured ([[upstream.hosted_models]] in headrace.toml)"]
    client, why = await connect_redis(settings.redis_url)
    if client is None:
        return [
            f"Redis at {settings.redis_url} does not answer ({why}): allowances are then "
            "counted in each upstream process; see headrace_upstream_allowance_used on "
            "its /metrics"
        ]
    try:
        allowances = Allowances(
            RedisAllowanceStore(client),
            {m.name: m.allowance for m in settings.hosted_models},
            settings.allowance_prefix,
        )
        lines = [f"{'model':<20} {'window':<20} {'used':>10} {'limit':>10} {'left':>10}  resets in"]
        for model in settings.hosted_models:
            key = "present" if model.api_key() else "absent"
            cooling = await allowances.cooldown_s(model.name)
            state = f", cooling down {cooling:.0f}s after a 429" if cooling else ""
            lines.append(
                f"{model.name} ({model.provider}, key {key}, {model.allowance.timezone}{state})"
            )
            usages = await allowances.usage(model.name)
            if not usages:
                lines.append(f"{'':<20} {'(no allowance: unlimited)':<20}")
            for u in usages:
                lines.append(
                    f"{'':<20} {u.window:<20} {u.used:>10} {u.limit:>10} {u.left:>10}  "
                    f"{_duration(u.resets_in_s)}"
                )
        return lines
    finally:
        await client.aclose()
