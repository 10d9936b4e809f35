"""Connecting to Redis the same way in every service: used when it answers a PING
now, otherwise the caller falls back to an in-process store and says so."""

from __future__ import annotations

import asyncio

import redis.asyncio as redis
from redis.exceptions import RedisError


async def connect_redis(url: str, *, socket_timeout: float = 1.0) -> tuple[redis.Redis | None, str]:
    """A client if Redis at `url` answers a PING within a second, else (None, why)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=socket_timeout)
    try:
        await asyncio.wait_for(client.ping(), 1.0)
    except (RedisError, OSError, TimeoutError) as exc:
        await client.aclose()
        return None, str(exc) or type(exc).__name__
    return client, ""
