"""CacheService RPCs ↔ the answers domain (lookup order, single-flight, storing)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf import json_format

from headrace.auth.v1 import auth_pb2, auth_pb2_grpc
from headrace.cache.v1 import cache_pb2, cache_pb2_grpc
from headrace.services.cache import metrics
from headrace.services.cache.answers import Answers, Following, Question, Stored
from headrace.services.cache.flights import Final, FlightFailed
from headrace.services.cache.responses import Entry
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


def _entry_messages(entry: Entry) -> list[cache_pb2.LookupResponse]:
    """A stored entry chunked as it streamed, the last chunk carrying the end."""
    messages = [cache_pb2.LookupResponse(hit=True, text=chunk) for chunk in entry.chunks[:-1]]
    messages.append(
        cache_pb2.LookupResponse(
            hit=True,
            text=entry.chunks[-1] if entry.chunks else "",
            finish_reason=entry.finish_reason,
            usage=_usage(entry.prompt_tokens, entry.completion_tokens),
        )
    )
    return messages


class CacheServicer(cache_pb2_grpc.CacheServiceServicer):
    """Looks up, shares and stores complete responses."""

    def __init__(self, answers: Answers, auth: auth_pb2_grpc.AuthServiceStub) -> None:
        self.answers = answers
        self._auth = auth

    async def Lookup(
        self, request: cache_pb2.LookupRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[cache_pb2.LookupResponse]:
        answer = await self.answers.find(question_from(request.key))
        if isinstance(answer, Stored):
            for message in _entry_messages(answer.entry):
                yield message
        elif isinstance(answer, Following):
            try:
                async for item in answer.flight.follow():
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
        else:
            yield cache_pb2.LookupResponse(hit=False)

    async def Store(
        self,
        request_iterator: AsyncIterator[cache_pb2.StoreRequest],
        context: grpc.aio.ServicerContext,
    ) -> cache_pb2.StoreResponse:
        recording = None
        final: Final | None = None
        try:
            async for message in request_iterator:
                if recording is None:
                    if not message.HasField("key"):
                        raise InvalidArgument("the first StoreRequest must carry the key")
                    recording = self.answers.record(question_from(message.key))
                if message.text:
                    await recording.add(message.text)
                if message.complete:
                    final = Final(
                        message.finish_reason,
                        message.usage.prompt_tokens,
                        message.usage.completion_tokens,
                    )
                    break
        finally:
            # A stream that ends without `complete` (cancelled, failed, filtered)
            # fails its flight and stores nothing.
            stored = await recording.end(final) if recording is not None else False
        return cache_pb2.StoreResponse(stored=stored)

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
