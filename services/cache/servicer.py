"""CacheService RPCs ↔ the answers domain (lookup order, single-flight, storing)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import grpc
from google.protobuf import json_format

from headrace.auth.v1 import auth_pb2, auth_pb2_grpc
from headrace.cache.v1 import cache_pb2, cache_pb2_grpc
from headrace.services.cache import metrics
from headrace.services.cache.answers import Answers, Following, Missed, Question, Stored
from headrace.services.cache.flights import Final, FlightFailed
from headrace.services.cache.responses import Entry
from headrace.services.runtime import tracing
from headrace.services.runtime.credentials import ADMIN_SCOPE, credential_from, within_deadline
from headrace.services.runtime.errors import HeadraceError, InvalidArgument, PermissionDenied
from headrace.services.runtime.interceptors import outgoing_metadata
from headrace.services.runtime.params import is_deterministic
from headrace.types.v1 import types_pb2

# The admin check waits for auth at most this long, less when the caller's deadline
# comes sooner.
ADMIN_CHECK_LIMIT_S = 5.0


class Aborted(HeadraceError):
    code = grpc.StatusCode.ABORTED


def _usage(prompt_tokens: int, completion_tokens: int) -> types_pb2.Usage:
    return types_pb2.Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


def question_from(key: cache_pb2.CacheKey) -> Question:
    """The domain's view of a CacheKey: the content digest stands for the content."""
    return Question(
        model=key.model,
        revision=key.revision,
        digest=key.content_digest,
        prompt=key.prompt,
        params=json_format.MessageToDict(key.params, preserving_proto_field_name=True),
        deterministic=is_deterministic(key.params),
        subject=key.subject,
        task=key.task,
        output_policy=key.output_policy,
    )


Reply = TypeVar("Reply", cache_pb2.LookupResponse, cache_pb2.AnswerResponse)


def _entry_messages(entry: Entry, reply: type[Reply]) -> list[Reply]:
    """A stored entry chunked as it streamed, the last chunk carrying the end."""
    messages = [reply(hit=True, text=chunk) for chunk in entry.chunks[:-1]]
    messages.append(
        reply(
            hit=True,
            text=entry.chunks[-1] if entry.chunks else "",
            finish_reason=entry.finish_reason,
            usage=_usage(entry.prompt_tokens, entry.completion_tokens),
        )
    )
    return messages


async def _hits(answer: Stored | Following, reply: type[Reply]) -> AsyncIterator[Reply]:
    """A hit as reply messages: a stored entry, or an identical request's flight as
    it streams (ABORTED when that request stops before it finishes)."""
    if isinstance(answer, Stored):
        for message in _entry_messages(answer.entry, reply):
            yield message
        return
    try:
        async for item in answer.flight.follow():
            if isinstance(item, Final):
                yield reply(
                    hit=True,
                    finish_reason=item.finish_reason,
                    usage=_usage(item.prompt_tokens, item.completion_tokens),
                )
            else:
                yield reply(hit=True, text=item)
    except FlightFailed:
        raise Aborted(
            "the identical request this one was sharing stopped before it finished; "
            "retry the request"
        ) from None


Sent = cache_pb2.StoreRequest | cache_pb2.AnswerRequest


async def _record(
    answers: Answers, key: cache_pb2.CacheKey, first: Sent | None, rest: AsyncIterator[Sent]
) -> bool:
    """A response as it streams in (`first`, then `rest`: text in order, the last with
    `complete`), stored when it completed; whether it was kept. A stream that ends
    without `complete` (cancelled, failed, filtered) fails its flight and stores
    nothing."""
    recording = answers.record(question_from(key))
    final: Final | None = None

    async def take(message: Sent) -> bool:
        nonlocal final
        if message.text:
            await recording.add(message.text)
        if message.complete:
            final = Final(
                message.finish_reason,
                message.usage.prompt_tokens,
                message.usage.completion_tokens,
            )
        return message.complete

    try:
        if first is None or not await take(first):
            async for message in rest:
                if await take(message):
                    break
    finally:
        stored = await recording.end(final)
    return stored


class CacheServicer(cache_pb2_grpc.CacheServiceServicer):
    """Looks up, shares and stores complete responses."""

    def __init__(self, answers: Answers, auth: auth_pb2_grpc.AuthServiceStub) -> None:
        self.answers = answers
        self._auth = auth

    async def Lookup(
        self, request: cache_pb2.LookupRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[cache_pb2.LookupResponse]:
        answer = await self.answers.find(question_from(request.key))
        if isinstance(answer, Missed):
            yield cache_pb2.LookupResponse(hit=False)
            return
        async for message in _hits(answer, cache_pb2.LookupResponse):
            yield message

    async def Store(
        self,
        request_iterator: AsyncIterator[cache_pb2.StoreRequest],
        context: grpc.aio.ServicerContext,
    ) -> cache_pb2.StoreResponse:
        first = await anext(request_iterator, None)
        if first is None:
            return cache_pb2.StoreResponse(stored=False)
        if not first.HasField("key"):
            raise InvalidArgument("the first StoreRequest must carry the key")
        stored = await _record(self.answers, first.key, first, request_iterator)
        return cache_pb2.StoreResponse(stored=stored)

    async def Answer(
        self,
        request_iterator: AsyncIterator[cache_pb2.AnswerRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[cache_pb2.AnswerResponse]:
        first = await anext(request_iterator, None)
        if first is None:
            return
        if not first.HasField("key"):
            raise InvalidArgument("the first AnswerRequest must carry the key")
        answer = await self.answers.find(question_from(first.key))
        if (span := tracing.current_span()) is not None:
            # The call lasts as long as the response; the lookup's end is this event.
            span.add_event("looked_up", {"headrace.hit": not isinstance(answer, Missed)})
        if not isinstance(answer, Missed):
            async for message in _hits(answer, cache_pb2.AnswerResponse):
                yield message
            return
        # The caller leads the key's flight: what it sends next is the response.
        yield cache_pb2.AnswerResponse(hit=False)
        stored = await _record(self.answers, first.key, None, request_iterator)
        yield cache_pb2.AnswerResponse(hit=False, stored=stored)

    async def _require_admin(self, context: grpc.aio.ServicerContext) -> None:
        reply = await self._auth.Authorize(
            auth_pb2.AuthorizeRequest(credential=credential_from(context)),
            timeout=within_deadline(context.time_remaining(), ADMIN_CHECK_LIMIT_S),
            metadata=outgoing_metadata(),
        )
        if ADMIN_SCOPE not in reply.scopes:
            raise PermissionDenied(f"this call needs the {ADMIN_SCOPE!r} scope")

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
        counts = self.answers.counts
        return cache_pb2.GetStatsResponse(
            backend=self.answers.cache.store.name,
            hits=counts["hit"],
            shared=counts["shared"],
            semantic=counts["semantic"],
            misses=counts["miss"],
            stores=counts["stores"],
            errors=int(errors),
            entries=await self.answers.cache.store.count(),
        )

    async def Flush(
        self, request: cache_pb2.FlushRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.FlushResponse:
        await self._require_admin(context)
        return cache_pb2.FlushResponse(deleted=await self.answers.cache.store.flush(request.model))
