"""CacheService RPCs ↔ the response cache and the single-flight table."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format

from headrace.auth.v1 import auth_pb2, auth_pb2_grpc
from headrace.cache.v1 import cache_pb2, cache_pb2_grpc
from headrace.services.cache import metrics
from headrace.services.cache.flights import Final, FlightFailed, Flights
from headrace.services.cache.responses import Entry, ResponseCache, cache_key
from headrace.services.cache.semantic import SemanticIndex
from headrace.services.runtime.credentials import credential_from
from headrace.services.runtime.errors import HeadraceError, InvalidArgument, PermissionDenied
from headrace.services.runtime.interceptors import outgoing_metadata
from headrace.services.runtime.params import is_deterministic
from headrace.types.v1 import types_pb2

COMPLETE = (types_pb2.FINISH_REASON_STOP, types_pb2.FINISH_REASON_LENGTH)


class Aborted(HeadraceError):
    code = grpc.StatusCode.ABORTED


def _usage(prompt_tokens: int, completion_tokens: int) -> types_pb2.Usage:
    return types_pb2.Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


class CacheServicer(cache_pb2_grpc.CacheServiceServicer):
    """Looks up, shares and stores complete responses."""

    def __init__(
        self,
        cache: ResponseCache,
        flights: Flights,
        ttl_seconds: int,
        per_subject: bool,
        auth: auth_pb2_grpc.AuthServiceStub,
        semantic: SemanticIndex | None = None,
        semantic_models: frozenset[str] = frozenset(),
        semantic_tasks: frozenset[str] = frozenset(),
    ) -> None:
        self._cache = cache
        self._flights = flights
        self._ttl = ttl_seconds
        self._per_subject = per_subject
        self._auth = auth
        self._semantic = semantic
        self._semantic_models = semantic_models
        self._semantic_tasks = semantic_tasks
        self._background: set[asyncio.Task[None]] = set()
        self._counts = {"hit": 0, "shared": 0, "semantic": 0, "miss": 0, "stores": 0}

    def _key(self, key: cache_pb2.CacheKey) -> tuple[str, bool, dict[str, Any]]:
        """The Redis key, whether the params allow caching, and the params as a dict."""
        params = json_format.MessageToDict(key.params, preserving_proto_field_name=True)
        subject = key.subject if self._per_subject else ""
        return (
            cache_key(key.model, key.prompt, params, subject, key.revision),
            is_deterministic(key.params),
            params,
        )

    def _semantic_scope(self, key: cache_pb2.CacheKey, params: dict[str, Any]) -> str | None:
        """The scope a prompt is compared within, or None when semantic matching is off."""
        if self._semantic is None:
            return None
        if self._semantic_models and key.model not in self._semantic_models:
            return None
        if self._semantic_tasks and key.task not in self._semantic_tasks:
            return None
        subject = key.subject if self._per_subject else ""
        return cache_key(key.model, "", params, subject, key.revision) + ":" + key.task

    async def _replay(self, entry: Entry) -> AsyncIterator[cache_pb2.LookupResponse]:
        for chunk in entry.chunks[:-1]:
            yield cache_pb2.LookupResponse(hit=True, text=chunk)
        yield cache_pb2.LookupResponse(
            hit=True,
            text=entry.chunks[-1] if entry.chunks else "",
            finish_reason=entry.finish_reason,
            usage=_usage(entry.prompt_tokens, entry.completion_tokens),
        )

    def _count(self, result: str) -> None:
        metrics.LOOKUPS.labels(result).inc()
        self._counts[result] += 1

    async def Lookup(
        self, request: cache_pb2.LookupRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[cache_pb2.LookupResponse]:
        started = time.perf_counter()
        key, cacheable, params = self._key(request.key)
        entry = await self._cache.store.get(key) if cacheable else None
        if entry is not None:
            self._count("hit")
            metrics.LOOKUP_LATENCY.observe(time.perf_counter() - started)
            async for message in self._replay(entry):
                yield message
            return
        flight = self._flights.get(key) if cacheable else None
        scope = self._semantic_scope(request.key, params) if cacheable and flight is None else None
        if scope is not None and self._semantic is not None:
            match = await self._semantic.nearest(scope, request.key.prompt)
            similar = await self._cache.store.get(match[0]) if match else None
            if similar is not None:
                self._count("semantic")
                metrics.LOOKUP_LATENCY.observe(time.perf_counter() - started)
                async for message in self._replay(similar):
                    yield message
                return
        if flight is None:
            if cacheable:
                self._flights.open(key)
            self._count("miss")
            metrics.LOOKUP_LATENCY.observe(time.perf_counter() - started)
            yield cache_pb2.LookupResponse(hit=False)
            return
        self._count("shared")
        try:
            async for item in flight.follow():
                if isinstance(item, Final):
                    yield cache_pb2.LookupResponse(
                        hit=True,
                        finish_reason=item.finish_reason,
                        usage=_usage(item.prompt_tokens, item.completion_tokens),
                    )
                else:
                    yield cache_pb2.LookupResponse(hit=True, text=item)
        except FlightFailed:
            raise Aborted(
                "the identical request this one was sharing stopped before it finished; "
                "retry the request"
            ) from None

    async def Store(
        self,
        request_iterator: AsyncIterator[cache_pb2.StoreRequest],
        context: grpc.aio.ServicerContext,
    ) -> cache_pb2.StoreResponse:
        key = ""
        cacheable = False
        flight = None
        first_key: cache_pb2.CacheKey | None = None
        params: dict[str, Any] = {}
        chunks: list[str] = []
        final: Final | None = None
        stored = False
        try:
            async for message in request_iterator:
                if not key:
                    if not message.HasField("key"):
                        raise InvalidArgument("the first StoreRequest must carry the key")
                    key, cacheable, params = self._key(message.key)
                    first_key = message.key
                    flight = self._flights.claim(key) if cacheable else None
                if message.text:
                    chunks.append(message.text)
                    if flight is not None:
                        await flight.add(message.text)
                if message.complete:
                    if message.finish_reason in COMPLETE:
                        final = Final(
                            message.finish_reason,
                            message.usage.prompt_tokens,
                            message.usage.completion_tokens,
                        )
                    break
            if final is not None and cacheable:
                # Stored before the flight closes: an identical request arriving in
                # between follows the flight, one arriving after finds the entry.
                entry = Entry(
                    chunks, final.finish_reason, final.prompt_tokens, final.completion_tokens
                )
                stored = await self._cache.store.put(key, entry, self._ttl)
        finally:
            # A stream that ends without `complete` (cancelled, failed, filtered)
            # fails its flight and stores nothing.
            if flight is not None:
                await self._flights.close(flight, final)
        if final is None:
            metrics.STORES.labels("incomplete").inc()
            return cache_pb2.StoreResponse(stored=False)
        if not cacheable:
            metrics.STORES.labels("not_cacheable").inc()
            return cache_pb2.StoreResponse(stored=False)
        metrics.STORES.labels("stored" if stored else "rejected").inc()
        if stored:
            self._counts["stores"] += 1
            scope = self._semantic_scope(first_key, params) if first_key is not None else None
            if scope is not None and self._semantic is not None:
                # Embedding takes tens of ms: off the request's path.
                task = asyncio.create_task(self._semantic.add(scope, first_key.prompt, key))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return cache_pb2.StoreResponse(stored=stored)

    async def _require_admin(self, context: grpc.aio.ServicerContext) -> None:
        reply = await self._auth.Authorize(
            auth_pb2.AuthorizeRequest(credential=credential_from(context)),
            timeout=5.0,
            metadata=outgoing_metadata(),
        )
        if "admin" not in reply.scopes:
            raise PermissionDenied("this call needs the 'admin' scope")

    async def GetStats(
        self, request: cache_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.GetStatsResponse:
        await self._require_admin(context)
        errors = sum(
            sample.value
            for family in metrics.ERRORS.collect()
            for sample in family.samples
            if sample.name.endswith("_total")
        )
        return cache_pb2.GetStatsResponse(
            backend=self._cache.store.name,
            hits=self._counts["hit"],
            shared=self._counts["shared"],
            semantic=self._counts["semantic"],
            misses=self._counts["miss"],
            stores=self._counts["stores"],
            errors=int(errors),
            entries=await self._cache.store.count(),
        )

    async def Flush(
        self, request: cache_pb2.FlushRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.FlushResponse:
        await self._require_admin(context)
        return cache_pb2.FlushResponse(deleted=await self._cache.store.flush(request.model))
