"""`python -m headrace.services.cache`: run the cache service."""

from __future__ import annotations

import grpc

from headrace.cache.v1 import cache_pb2, cache_pb2_grpc
from headrace.services.cache.responses import open_store
from headrace.services.cache.servicer import CacheServicer
from headrace.services.cache.settings import CacheSettings
from headrace.services.runtime.server import Service, run


async def make_service() -> Service:
    settings = CacheSettings()
    store = await open_store(
        settings.redis_url,
        settings.redis_timeout_seconds,
        settings.cache_max_entry_bytes,
        settings.memory_cache_entries,
    )

    async def register(server: grpc.aio.Server) -> list[str]:
        cache_pb2_grpc.add_CacheServiceServicer_to_server(
            CacheServicer(store, settings.cache_ttl_seconds), server
        )
        return [cache_pb2.DESCRIPTOR.services_by_name["CacheService"].full_name]

    return Service("cache", settings, register, close=store.close)


if __name__ == "__main__":
    run(make_service, "cache")
