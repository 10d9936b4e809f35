"""CacheService RPCs ↔ the response store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf import json_format

from headrace.cache.v1 import cache_pb2, cache_pb2_grpc
from headrace.services.cache.responses import Entry, ResponseStore, cache_key, is_cacheable
from headrace.services.runtime.errors import InvalidArgument
from headrace.types.v1 import types_pb2


def _key(key: cache_pb2.CacheKey) -> tuple[str, bool]:
    params = json_format.MessageToDict(key.params, preserving_proto_field_name=True)
    return cache_key(key.model, key.prompt, params), is_cacheable(params)


class CacheServicer(cache_pb2_grpc.CacheServiceServicer):
    """Looks up and stores complete responses."""

    def __init__(self, store: ResponseStore, ttl_seconds: int) -> None:
        self._store = store
        self._ttl = ttl_seconds

    async def Lookup(
        self, request: cache_pb2.LookupRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[cache_pb2.LookupResponse]:
        key, cacheable = _key(request.key)
        entry = await self._store.get(key) if cacheable else None
        if entry is None:
            yield cache_pb2.LookupResponse(hit=False)
            return
        for chunk in entry.chunks[:-1]:
            yield cache_pb2.LookupResponse(hit=True, text=chunk)
        yield cache_pb2.LookupResponse(
            hit=True,
            text=entry.chunks[-1] if entry.chunks else "",
            finish_reason=entry.finish_reason,
            usage=types_pb2.Usage(
                prompt_tokens=entry.prompt_tokens,
                completion_tokens=entry.completion_tokens,
                total_tokens=entry.prompt_tokens + entry.completion_tokens,
            ),
        )

    async def Store(
        self,
        request_iterator: AsyncIterator[cache_pb2.StoreRequest],
        context: grpc.aio.ServicerContext,
    ) -> cache_pb2.StoreResponse:
        key = ""
        cacheable = False
        chunks: list[str] = []
        async for message in request_iterator:
            if not key:
                if not message.HasField("key"):
                    raise InvalidArgument("the first StoreRequest must carry the key")
                key, cacheable = _key(message.key)
            if message.text:
                chunks.append(message.text)
            if message.complete:
                if message.finish_reason not in (
                    types_pb2.FINISH_REASON_STOP,
                    types_pb2.FINISH_REASON_LENGTH,
                ):
                    return cache_pb2.StoreResponse(stored=False)
                if not cacheable:
                    return cache_pb2.StoreResponse(stored=False)
                entry = Entry(
                    chunks=chunks,
                    finish_reason=message.finish_reason,
                    prompt_tokens=message.usage.prompt_tokens,
                    completion_tokens=message.usage.completion_tokens,
                )
                stored = await self._store.put(key, entry, self._ttl)
                return cache_pb2.StoreResponse(stored=stored)
        # The stream ended without `complete`: a cancelled or failed response.
        return cache_pb2.StoreResponse(stored=False)
