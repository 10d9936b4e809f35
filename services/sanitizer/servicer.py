"""SanitizerService RPCs ↔ the policy domain."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from headrace.sanitizer.v1 import sanitizer_pb2, sanitizer_pb2_grpc
from headrace.services.sanitizer.policy import PromptPolicy, StreamFilter


class SanitizerServicer(sanitizer_pb2_grpc.SanitizerServiceServicer):
    """Checks prompts and filters output streams."""

    def __init__(self, policy: PromptPolicy, deny_terms: list[str]) -> None:
        self._policy = policy
        self._deny_terms = deny_terms

    async def CheckPrompt(
        self, request: sanitizer_pb2.CheckPromptRequest, context: grpc.aio.ServicerContext
    ) -> sanitizer_pb2.CheckPromptResponse:
        checked = self._policy.check(request.prompt)
        return sanitizer_pb2.CheckPromptResponse(prompt=checked.text, redactions=checked.redactions)

    async def FilterStream(
        self,
        request_iterator: AsyncIterator[sanitizer_pb2.FilterStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[sanitizer_pb2.FilterStreamResponse]:
        stream_filter = StreamFilter(self._deny_terms)
        async for piece in request_iterator:
            result = stream_filter.feed(piece.text, end=piece.end)
            # Exactly one response per request, so callers can run in lockstep.
            yield sanitizer_pb2.FilterStreamResponse(
                text=result.text, blocked=result.blocked, rule_id=result.rule_id
            )
            if result.blocked or piece.end:
                return
