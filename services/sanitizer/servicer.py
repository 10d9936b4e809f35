"""SanitizerService RPCs ↔ the policy domain."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import grpc

from headrace.sanitizer.v1 import sanitizer_pb2, sanitizer_pb2_grpc
from headrace.services.runtime.errors import InvalidArgument
from headrace.services.runtime.output_filter.rules import Direction
from headrace.services.sanitizer import metrics
from headrace.services.sanitizer.guard_client import GuardClient
from headrace.services.sanitizer.live import LivePolicies
from headrace.services.sanitizer.policy import (
    PromptPolicy,
    TierPolicies,
    accept,
    accept_conversation,
    after_guard,
)
from headrace.types.v1 import types_pb2


class SanitizerServicer(sanitizer_pb2_grpc.SanitizerServiceServicer):
    """Checks prompts, filters output streams, and serves the output policy as data."""

    def __init__(
        self,
        policies: TierPolicies | LivePolicies,
        heartbeat_s: float = 1.0,
        guard: GuardClient | None = None,
    ) -> None:
        self._live = policies if isinstance(policies, LivePolicies) else LivePolicies(policies)
        self._heartbeat = heartbeat_s
        self._guard = guard

    async def _flags(self, policy: PromptPolicy, flags: list[str], text: str) -> list[str]:
        """The checks' flags, and the guard's when the tier has one (may raise)."""
        if policy.guard is None or self._guard is None:
            return flags
        verdict = await self._guard.judge(policy.guard, text)
        metrics.GUARD_VERDICTS.labels(verdict.value).inc()
        return [*flags, *after_guard(policy.guard, verdict)]

    async def CheckPrompt(
        self, request: sanitizer_pb2.CheckPromptRequest, context: grpc.aio.ServicerContext
    ) -> sanitizer_pb2.CheckPromptResponse:
        # Runs on the event loop: well under a millisecond for a 4 KB prompt,
        # less than a hop to a worker thread would cost.
        policy = self._live.policies.for_tier(request.tier)
        if request.messages:
            if request.prompt:
                raise InvalidArgument("set either prompt or messages, not both")
            return await self._check_conversation(policy, request.messages)
        with metrics.CHECK_PROMPT_SECONDS.time():
            verdict = policy.evaluate(request.prompt)
        metrics.record(verdict.hits, Direction.PROMPT)
        checked = accept(verdict)
        flags = await self._flags(policy, verdict.flags, checked.text)
        return sanitizer_pb2.CheckPromptResponse(
            prompt=checked.text,
            redactions=checked.redactions,
            output_unfiltered=not policy.filters_output,
            flags=flags,
            decided_by=flags[0] if flags else "",
            injection_score=verdict.score,
        )

    async def _check_conversation(
        self, policy: PromptPolicy, messages: Sequence[types_pb2.ChatMessage]
    ) -> sanitizer_pb2.CheckPromptResponse:
        with metrics.CHECK_PROMPT_SECONDS.time():
            verdict = policy.evaluate_conversation([m.content for m in messages])
        metrics.record(verdict.hits, Direction.PROMPT)
        checked = accept_conversation(verdict)
        flags = await self._flags(policy, verdict.flags, "\n".join(t.text for t in checked))
        return sanitizer_pb2.CheckPromptResponse(
            messages=[
                types_pb2.ChatMessage(role=m.role, content=turn.text)
                for m, turn in zip(messages, checked, strict=True)
            ],
            redactions=verdict.redactions,
            output_unfiltered=not policy.filters_output,
            flags=flags,
            decided_by=flags[0] if flags else "",
            injection_score=verdict.score,
        )

    async def FilterStream(
        self,
        request_iterator: AsyncIterator[sanitizer_pb2.FilterStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[sanitizer_pb2.FilterStreamResponse]:
        stream_filter = None
        async for piece in request_iterator:
            if stream_filter is None:  # the first message names the tier
                stream_filter = self._live.policies.for_tier(piece.tier).stream_filter()
            result = stream_filter.feed(piece.text, end=piece.end)
            metrics.record(result.hits, Direction.OUTPUT)
            # Exactly one response per request, so callers can run in lockstep.
            yield sanitizer_pb2.FilterStreamResponse(
                text=result.text, blocked=result.blocked, rule_id=result.rule_id
            )
            if result.blocked or piece.end:
                return

    async def WatchOutputPolicy(
        self, request: sanitizer_pb2.WatchOutputPolicyRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[sanitizer_pb2.WatchOutputPolicyResponse]:
        known = request.known_version
        closed = self._live.closed
        while not closed.is_set():
            current = self._live.current
            reply = sanitizer_pb2.WatchOutputPolicyResponse(
                version=current.version, heartbeat_seconds=self._heartbeat
            )
            if current.version != known:
                reply.policies.CopyFrom(current.output)
                known = current.version
            yield reply
            # Wake on a new version, on the service stopping, or for the heartbeat.
            waits = [asyncio.ensure_future(current.replaced.wait())]
            waits.append(asyncio.ensure_future(closed.wait()))
            try:
                await asyncio.wait(waits, timeout=self._heartbeat, return_when="FIRST_COMPLETED")
            finally:
                for wait in waits:
                    wait.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await wait
