"""Typed clients of the internal services: the only router module that speaks their
protobuf. Each client owns its stub's deadlines, metadata, error mapping and message
conversion; the pipeline (orchestrator.py) sees dataclasses and async iterators.

Errors: a failed call raises what the client should see (`upstream_error`): outages
and streams reset mid-way become Unavailable naming the service; the services' own
statuses (INVALID_ARGUMENT, PERMISSION_DENIED, FAILED_PRECONDITION, ...) pass through
with their messages and trailers as grpc.aio.AioRpcError.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from headrace.auth.v1 import auth_pb2, auth_pb2_grpc
from headrace.cache.v1 import cache_pb2, cache_pb2_grpc
from headrace.inference.v1 import inference_pb2, inference_pb2_grpc
from headrace.sanitizer.v1 import sanitizer_pb2, sanitizer_pb2_grpc
from headrace.services.router.content import Content, Turn
from headrace.services.router.metrics import (
    OUTPUT_POLICY_REFUSALS,
    OUTPUT_POLICY_UPDATES,
    OUTPUT_RULE_MATCHES,
)
from headrace.services.runtime.credentials import within_deadline
from headrace.services.runtime.errors import Unavailable
from headrace.services.runtime.interceptors import outgoing_metadata
from headrace.services.runtime.logs import get_logger
from headrace.services.runtime.output_filter.rules import Action, RuleSet
from headrace.services.runtime.output_filter.stream import StreamFilter
from headrace.services.runtime.output_filter.wire import OutputPolicies, PolicyError
from headrace.types.v1 import types_pb2

log = get_logger(__name__)

# How gRPC reports a stream that Envoy reset because its upstream went away after
# the response began (a replica killed mid-stream): INTERNAL, naming RST_STREAM - or,
# for a message sent on such a stream, "Internal error from Core".
_RESET_DETAILS = (
    "RST_STREAM",
    "Stream removed",
    "Socket closed",
    "Connection reset",
    "Internal error from Core",
)


def upstream_error(service: str, exc: grpc.aio.AioRpcError) -> BaseException:
    """A failed internal call as the client should see it."""
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(
            f"the {service} service is unavailable ({details}); retry in a few seconds"
        )
    if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN) and any(
        marker in details for marker in _RESET_DETAILS
    ):
        return Unavailable(
            f"the {service} service went away mid-request ({details}); retry the request"
        )
    if code == grpc.StatusCode.ABORTED:
        # A shared (single-flight) generation stopped: retrying is the remedy.
        return Unavailable(details or "retry the request")
    return exc


# ---- what the clients return ------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """A verified caller, as auth answered."""

    subject: str
    tier: str
    scopes: tuple[str, ...] = ()
    reserved_tokens: int = 0


@dataclass(frozen=True)
class Checked:
    """Content the sanitizer let through: redacted, with the rules that changed it."""

    content: Content
    redactions: tuple[str, ...]
    output_filtered: bool
    """CheckPrompt's word that the tier's policy has output rules; the router filters by
    the policy the sanitizer publishes (`OutputRules`), which says the same."""
    flags: tuple[str, ...] = ()
    """Signals that flagged the content but let it through (for the audit line)."""
    decided_by: str = ""
    """The signal that decided, when one fired."""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Piece:
    """A piece of a response: text, and on the last piece how it ended."""

    text: str = ""
    finish_reason: int = types_pb2.FINISH_REASON_UNSPECIFIED
    usage: Usage | None = None
    """Token counts, on the last piece (none on one the output filter ended)."""

    @property
    def last(self) -> bool:
        return self.finish_reason != types_pb2.FINISH_REASON_UNSPECIFIED


@dataclass(frozen=True)
class ModelInfo:
    name: str
    revision: str = ""
    context_size: int = 0
    is_default: bool = False
    aliases: tuple[str, ...] = ()
    """Other names for the model; requests that use one are served (and cached) as `name`."""
    provider: str = ""
    """A hosted model's provider (who sees the request); empty for a local model."""
    hosted: bool = False
    """Served by the upstream service (a hosted provider), not by local inference."""
    supports_json_schema: bool = True
    supports_grammar: bool = True
    """Whether the model honours a JSON Schema / a raw grammar (local ones do)."""

    def answers_to(self, name: str) -> bool:
        """Whether a request naming `name` ("" is the default) means this model."""
        if not name:
            return self.is_default
        return name == self.name or name in self.aliases


@dataclass(frozen=True)
class ResponseKey:
    """What makes two requests equal for the cache."""

    model: ModelInfo
    content: Content
    params: types_pb2.SamplingParams
    subject: str
    task: str
    output_policy: str = ""
    """The digest of the output policy the response is filtered with."""

    def to_proto(self) -> cache_pb2.CacheKey:
        return cache_pb2.CacheKey(
            model=self.model.name,
            revision=self.model.revision,
            # The prompt only serves the semantic cache's comparison; the digest keys.
            prompt="" if self.content.is_conversation else self.content.prompt,
            content_digest=self.content.digest(),
            params=self.params,
            subject=self.subject,
            task=self.task,
            output_policy=self.output_policy,
        )


@dataclass(frozen=True)
class Verdict:
    """What the output filter released of a piece."""

    text: str
    blocked: bool = False
    redacted: bool = False
    """A redaction rule changed the text (which a JSON reply may not survive)."""


def _messages(turns: tuple[Turn, ...]) -> list[types_pb2.ChatMessage]:
    return [types_pb2.ChatMessage(role=t.role, content=t.content) for t in turns]


# ---- auth -------------------------------------------------------------------------


class AuthClient:
    """auth.Authorize, and the settlement of each request's token reservation.

    A settlement waits up to `settle_delay_s` for the next Authorize, which carries it
    (one call fewer per request while requests keep coming); one still waiting then
    goes alone, as RecordUsage. Each has an id auth applies once, so settlements an
    Authorize carried are sent again whenever that call did not answer (failed,
    timed out, or cancelled with its client): never lost, never counted twice.
    `close()` sends what waits (at shutdown).
    """

    def __init__(
        self, stub: auth_pb2_grpc.AuthServiceStub, limit_s: float, settle_delay_s: float = 0.0
    ) -> None:
        self._stub = stub
        self._limit = limit_s
        self._delay = settle_delay_s
        self._pending: list[auth_pb2.RecordUsageRequest] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def authorize(
        self,
        credential: str,
        remaining: float | None,
        *,
        model: str = "",
        content_bytes: int = 0,
        reserve_tokens: int = 0,
    ) -> Principal:
        """Who the credential names (auth's answer, tier included), taking one request
        from its rate limit and reserving tokens; auth's errors pass through. The
        settlements waiting go with it."""
        settlements = self._take()
        try:
            reply = await self._stub.Authorize(
                auth_pb2.AuthorizeRequest(
                    credential=credential,
                    model=model,
                    content_bytes=content_bytes,
                    reserve_tokens=reserve_tokens,
                    settlements=settlements,
                ),
                timeout=within_deadline(remaining, self._limit),
                metadata=outgoing_metadata(),
            )
        except BaseException as exc:
            self._wait(settlements)  # auth may not have them: again (their ids dedupe)
            if isinstance(exc, grpc.aio.AioRpcError):
                raise upstream_error("auth", exc) from None
            raise
        return Principal(reply.subject, reply.tier, tuple(reply.scopes), reply.reserved_tokens)

    def settle(self, principal: Principal, used_tokens: int) -> None:
        """Replace the reservation by the tokens really used: with the next Authorize,
        or alone after the delay (logged if it fails)."""
        settlement = auth_pb2.RecordUsageRequest(
            subject=principal.subject,
            tier=principal.tier,
            reserved_tokens=principal.reserved_tokens,
            used_tokens=used_tokens,
            settlement_id=uuid.uuid4().hex,
        )
        self._wait([settlement])

    def _wait(self, settlements: list[auth_pb2.RecordUsageRequest]) -> None:
        """Settlements to go with the next Authorize, or alone after the delay."""
        if not settlements:
            return
        self._pending.extend(settlements)
        if self._timer is None:
            # In a context of its own: the request that started the timer is not the
            # one these settlements belong to (no request id or trace of its).
            self._timer = asyncio.get_running_loop().call_later(
                self._delay, self._send_waiting, context=contextvars.Context()
            )

    def _take(self) -> list[auth_pb2.RecordUsageRequest]:
        taken, self._pending = self._pending, []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return taken

    def _send_waiting(self) -> None:
        self._timer = None
        for request in self._take():
            task = asyncio.create_task(self._record(request))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _record(self, request: auth_pb2.RecordUsageRequest) -> None:
        try:
            await self._stub.RecordUsage(request, timeout=self._limit, metadata=outgoing_metadata())
        except grpc.aio.AioRpcError as exc:
            log.error("usage_not_recorded", subject=request.subject, error=exc.details())

    async def close(self) -> None:
        """Send every waiting settlement now and wait for those under way."""
        self._send_waiting()
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)


# ---- sanitizer --------------------------------------------------------------------


class LocalFilter:
    """The tier's output rules applied in the router's process (the shared
    split-safe StreamFilter): no network round trip per piece."""

    def __init__(self, rules: RuleSet) -> None:
        self._filter = StreamFilter(rules)

    def feed(self, text: str, end: bool) -> Verdict:
        result = self._filter.feed(text, end=end)
        redacted = False
        for hit in result.hits:
            OUTPUT_RULE_MATCHES.labels(hit.rule.id, hit.rule.action.value).inc()
            redacted = redacted or hit.rule.action is Action.REDACT
        return Verdict(result.text, result.blocked, redacted)

    def close(self) -> None:
        return None


class NoFilter:
    """The tier's policy has no output rule: every piece passes as it is."""

    def feed(self, text: str, end: bool) -> Verdict:
        return Verdict(text)

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class OutputRules:
    """One tier's output policy at one version: what filters one response."""

    version: str
    rules: RuleSet | None
    """None: the policy has no output rule."""
    digest: str = ""
    """A digest of this tier's rules alone: part of the cache key, so a response
    filtered under one policy is never replayed under another."""

    def filter(self) -> LocalFilter | NoFilter:
        """A filter for one response (each holds its own split-safe state)."""
        return NoFilter() if self.rules is None else LocalFilter(self.rules)


class OutputPolicyWatch:
    """sanitizer.WatchOutputPolicy, kept open: the output policies as the sanitizer
    publishes them, followed as they change. Fails closed: `rules_for` refuses
    (UNAVAILABLE) once nothing current has been heard for `stale_s` seconds (lost
    stream, silent sanitizer, or a policy this router cannot rebuild exactly), and
    before the first policy has arrived."""

    def __init__(
        self,
        stub: sanitizer_pb2_grpc.SanitizerServiceStub,
        stale_s: float,
        retry_s: float = 0.2,
    ) -> None:
        self._stub = stub
        self._stale = stale_s
        self._retry = retry_s
        self._policies: OutputPolicies | None = None
        self._heard = -math.inf
        self._first = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def version(self) -> str:
        return self._policies.version if self._policies is not None else ""

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._follow())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _follow(self) -> None:
        """Keep a watch open; reopen it whenever it ends or fails."""
        failures = 0
        while True:
            call = self._stub.WatchOutputPolicy(
                sanitizer_pb2.WatchOutputPolicyRequest(known_version=self.version)
            )
            try:
                async for reply in call:
                    self.apply(reply)
                    failures = 0
                log.warning("output_policy_watch_ended", version=self.version)
            except grpc.aio.AioRpcError as exc:
                failures += 1
                if failures == 1:  # once per outage, not every retry
                    log.warning(
                        "output_policy_watch_lost", code=exc.code().name, details=exc.details()
                    )
            finally:
                call.cancel()
            await asyncio.sleep(self._retry)

    def apply(self, reply: sanitizer_pb2.WatchOutputPolicyResponse) -> None:
        """Take one message: new policies, or a heartbeat for the version held."""
        if reply.HasField("policies"):
            try:
                policies = OutputPolicies.from_proto(reply.version, reply.policies)
            except PolicyError as exc:
                # Fail closed: the old rules are not the sanitizer's any more.
                log.error("output_policy_refused", version=reply.version, error=str(exc))
                self._policies, self._heard = None, -math.inf
                return
            changed = policies.version != self.version
            self._policies = policies
            if changed:
                log.info("output_policy_applied", version=policies.version)
                OUTPUT_POLICY_UPDATES.inc()
        if self._policies is not None and reply.version == self._policies.version:
            self._heard = time.monotonic()
            self._first.set()

    async def rules_for(self, tier: str, remaining: float | None) -> OutputRules:
        """The tier's current output rules; Unavailable when they are not known to be
        current. Before the first policy, waits for it (within the deadline)."""
        if self._policies is None and not self._first.is_set():
            wait = self._stale if remaining is None else min(self._stale, remaining)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first.wait(), wait)
        silent = time.monotonic() - self._heard
        if self._policies is None or silent > self._stale:
            OUTPUT_POLICY_REFUSALS.inc()
            raise Unavailable(
                "the output policy is not known to be current (no word from the "
                f"sanitizer's policy watch for over {self._stale:g} s), and output is never "
                "sent unfiltered: retry in a few seconds"
            )
        policies = self._policies
        return OutputRules(policies.version, policies.for_tier(tier), policies.digest_for(tier))


class SanitizerClient:
    """sanitizer.CheckPrompt, and the output policy it serves (WatchOutputPolicy)."""

    def __init__(
        self,
        stub: sanitizer_pb2_grpc.SanitizerServiceStub,
        limit_s: float,
        policy_stale_s: float = 5.0,
    ) -> None:
        self._stub = stub
        self._limit = limit_s
        self.policy = OutputPolicyWatch(stub, policy_stale_s)

    async def check(self, content: Content, tier: str, remaining: float | None) -> Checked:
        """The content as it may go on (redacted), under the tier's policy."""
        request = sanitizer_pb2.CheckPromptRequest(tier=tier)
        if content.is_conversation:
            request.messages.extend(_messages(content.turns))
        else:
            request.prompt = content.prompt
        try:
            reply = await self._stub.CheckPrompt(
                request,
                timeout=within_deadline(remaining, self._limit),
                metadata=outgoing_metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            raise upstream_error("sanitizer", exc) from None
        turns = [Turn(m.role, m.content) for m in reply.messages]
        if content.is_conversation and len(turns) != len(content.turns):
            # Fail closed: never send a model turns the sanitizer did not return.
            raise Unavailable(
                "the sanitizer did not return the checked conversation; retry the request"
            )
        return Checked(
            content.with_text(reply.prompt, turns),
            tuple(reply.redactions),
            not reply.output_unfiltered,
            tuple(reply.flags),
            reply.decided_by,
        )

    async def redact(self, text: str, remaining: float | None) -> str:
        """Free text (a feedback comment) as it may be stored."""
        checked = await self.check(Content(prompt=text), "", remaining)
        return checked.content.prompt

    async def output_rules(self, tier: str, remaining: float | None) -> OutputRules:
        """The tier's output rules as the sanitizer publishes them (fail closed)."""
        return await self.policy.rules_for(tier, remaining)


# ---- cache ------------------------------------------------------------------------

# A cache.Store call that failed: the cache is optional, so a cache service that
# fails mid-stream costs the response its cache copy, never the response.
_STORE_ERRORS = (grpc.aio.AioRpcError, asyncio.InvalidStateError)


@dataclass
class CacheCopy:
    """The copy of a response sent to cache.Store as it streams.

    One Store message per token would cost the router, Envoy and the cache a message
    each per token; gathering `interval` seconds of text costs single-flight
    followers at most that much lag. The first piece goes at once, so followers'
    first token is not held back. A failure gives the copy up (logged), never the
    response.
    """

    call: grpc.aio.StreamUnaryCall | grpc.aio.StreamStreamCall | None
    interval: float
    limit: float
    answered: bool = False
    """The call is cache.Answer's (its last reply says whether it was stored), not
    cache.Store's."""
    _pieces: list[str] = field(default_factory=list)
    _since: float = -math.inf

    def _message(self, **fields: Any) -> cache_pb2.StoreRequest | cache_pb2.AnswerRequest:
        """A message of the call's own type (Answer's and Store's share their fields)."""
        return (cache_pb2.AnswerRequest if self.answered else cache_pb2.StoreRequest)(**fields)

    async def _send(
        self, message: cache_pb2.StoreRequest | cache_pb2.AnswerRequest, *, last: bool = False
    ) -> None:
        if self.call is None:
            return
        try:
            await self.call.write(message)
            if last:
                await self.call.done_writing()
        except _STORE_ERRORS as exc:
            log.warning("cache_store_failed", error=str(exc) or type(exc).__name__)
            self.close()

    async def begin(self, key: ResponseKey) -> None:
        await self._send(self._message(key=key.to_proto()))

    async def add(self, text: str) -> None:
        """Take a piece; send what was gathered when the interval has passed."""
        self._pieces.append(text)
        now = time.monotonic()
        if now - self._since >= self.interval:
            self._since = now
            await self._send(self._message(text=self._take()))

    def _take(self) -> str:
        text = "".join(self._pieces)
        self._pieces.clear()
        return text

    async def complete(self, final: Piece) -> None:
        """Send what is gathered with the end (the cache keeps the response)."""
        await self._send(
            self._message(
                text=self._take(),
                complete=True,
                finish_reason=final.finish_reason,
                usage=_usage_proto(final.usage or Usage()),
            ),
            last=True,
        )

    async def stored(self) -> None:
        """Wait for the cache's answer (after the client has its last message)."""
        if self.call is None:
            return
        try:
            await asyncio.wait_for(self._ended(self.call), self.limit)
        except (grpc.aio.AioRpcError, TimeoutError) as exc:
            log.warning("cache_store_failed", error=str(exc))

    async def _ended(self, call: Any) -> None:
        if self.answered:
            await call.read()  # whether it was stored
            await call.code()  # and the call's end, so close() has nothing to cancel
        else:
            await call

    def close(self) -> None:
        """Give the copy up unless it was sent in full (the cache then keeps nothing)."""
        if self.call is not None and not self.call.done():
            self.call.cancel()
        self.call = None


def _usage_proto(usage: Usage) -> types_pb2.Usage:
    return types_pb2.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
    )


def _usage(usage: types_pb2.Usage) -> Usage:
    return Usage(usage.prompt_tokens, usage.completion_tokens)


class CacheAnswer:
    """A cache.Answer call: Lookup and Store on one stream (cache.proto).

    `hits()` replays a hit; after a miss, `copy()` sends the response generated in its
    place on the same stream. A cache that fails before answering is a miss (fail-open)
    with no copy on this stream.
    """

    def __init__(
        self, call: grpc.aio.StreamStreamCall, key: ResponseKey, interval: float, limit: float
    ) -> None:
        self._call = call
        self._key = key
        self._interval = interval
        self._limit = limit
        self._missed = False

    async def hits(self) -> AsyncIterator[Piece]:
        """The hit as pieces; nothing on a miss or a cache failure.

        A hit may be an identical request still generating (single-flight), so the
        call runs under the client's deadline, not the short upstream one.
        """
        started = False
        try:
            await self._call.write(cache_pb2.AnswerRequest(key=self._key.to_proto()))
            # read(), not `async for`: the stored answer is read() after the copy, and
            # grpc refuses the two styles on one call.
            while (chunk := await self._call.read()) is not grpc.aio.EOF:
                if not chunk.hit:
                    self._missed = True
                    return
                started = True
                yield Piece(chunk.text, chunk.finish_reason, _usage(chunk.usage))
        except _STORE_ERRORS as exc:
            if started:
                assert isinstance(exc, grpc.aio.AioRpcError)
                raise upstream_error("cache", exc) from None
            code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else ""
            details = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            log.warning("cache_lookup_failed", code=code, details=details)
        finally:
            if not self._missed:
                self._call.cancel()

    def copy(self) -> CacheCopy | None:
        """After a miss, the copy of the response on this call (this request leads the
        key's flight); None when the cache did not answer with a miss."""
        if not self._missed:
            return None
        return CacheCopy(self._call, self._interval, self._limit, answered=True)


class CacheClient:
    """cache.Answer, and cache.Store when an Answer call could not take the copy."""

    def __init__(
        self, stub: cache_pb2_grpc.CacheServiceStub, limit_s: float, store_interval_s: float
    ) -> None:
        self._stub = stub
        self._limit = limit_s
        self._interval = store_interval_s

    def answer(self, key: ResponseKey, remaining: float | None) -> CacheAnswer:
        """One cache.Answer call for `key`: a hit to replay, or the copy of a miss."""
        call = self._stub.Answer(timeout=remaining, metadata=outgoing_metadata())
        return CacheAnswer(call, key, self._interval, self._limit)

    async def copy(self, key: ResponseKey) -> CacheCopy:
        """A copy of the response being generated for `key`, its key already sent."""
        copy = CacheCopy(
            self._stub.Store(metadata=outgoing_metadata()), self._interval, self._limit
        )
        try:
            await copy.begin(key)
        except BaseException:
            copy.close()  # cancelled meanwhile: no Store left open to hold the key's flight
            raise
        return copy

    def no_copy(self) -> CacheCopy:
        """For responses the cache does not keep: every call does nothing."""
        return CacheCopy(None, self._interval, self._limit)


# ---- inference --------------------------------------------------------------------


# Envoy sends InferenceService calls with this header to the upstream service's cluster
# (hosted models), the others to local inference's (envoy/envoy.yaml.j2).
BACKEND_HEADER = "x-headrace-backend"


def _generate_request(
    model: str, content: Content, params: types_pb2.SamplingParams
) -> inference_pb2.GenerateRequest:
    request = inference_pb2.GenerateRequest(model=model, params=params)
    if content.is_conversation:
        request.messages.extend(_messages(content.turns))
    else:
        request.prompt = content.prompt
    if content.constrained:
        request.response_format.CopyFrom(content.response_format)
    return request


class SpeculationFailed(Exception):
    """A speculative generation ended before its first piece; generate afresh."""


class HeldGeneration:
    """A Speculate call: the request prefilling in inference, waiting for commit()."""

    def __init__(self, call: grpc.aio.StreamStreamCall, opened: asyncio.Task[None]) -> None:
        self._call = call
        self._opened = opened
        # A failed first write is read at the commit, or never (cancelled).
        opened.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def commit(self) -> AsyncIterator[Piece]:
        """Release the generation and stream its pieces. SpeculationFailed when it
        ended before the first one (no free slot, preempted, unsupported, ...)."""
        started = False
        try:
            await self._opened
            await self._call.write(inference_pb2.SpeculateRequest(commit=True))
            # No done_writing() first: inference acts on the commit itself, and the
            # pieces are read from the moment it is sent (a half-close costs a wait
            # during which the first tokens would pile up and go out as one message).
            async for reply in self._call:
                message = reply.response
                started = True
                yield Piece(message.text, message.finish_reason, _usage(message.usage))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            if not started:
                log.info(
                    "speculation_failed",
                    code=exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else "",
                )
                raise SpeculationFailed() from None
            assert isinstance(exc, grpc.aio.AioRpcError)
            raise upstream_error("inference", exc) from None
        finally:
            self._call.cancel()

    def cancel(self) -> None:
        """Drop the prefill: inference clears the sequence within one step."""
        self._opened.cancel()
        self._call.cancel()


class InferenceClient:
    """inference.Generate and ListModels, of local inference or (`hosted`) of the
    upstream service, which speaks the same protocol for hosted models."""

    def __init__(self, stub: inference_pb2_grpc.InferenceServiceStub, hosted: bool = False) -> None:
        self._stub = stub
        self.hosted = hosted
        self._service = "upstream" if hosted else "inference"

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (
            outgoing_metadata((BACKEND_HEADER, "upstream")) if self.hosted else outgoing_metadata()
        )

    async def generate(
        self,
        model: str,
        content: Content,
        params: types_pb2.SamplingParams,
        remaining: float | None,
    ) -> AsyncIterator[Piece]:
        """The model's pieces as they are decoded; the call ends with the iteration.
        Inference's own errors (FAILED_PRECONDITION: no chat template; INVALID_ARGUMENT:
        a schema or grammar it refuses) pass through with their messages."""
        request = _generate_request(model, content, params)
        call = self._stub.Generate(request, timeout=remaining, metadata=self._metadata())
        try:
            async for reply in call:
                yield Piece(reply.text, reply.finish_reason, _usage(reply.usage))
        except grpc.aio.AioRpcError as exc:
            raise upstream_error(self._service, exc) from None
        finally:
            call.cancel()

    def speculate(
        self,
        model: str,
        content: Content,
        params: types_pb2.SamplingParams,
        remaining: float | None,
    ) -> HeldGeneration:
        """Have local inference prefill a request whose admission is still under way
        (inference.Speculate); nothing comes back before HeldGeneration.commit()."""
        assert not self.hosted, "unchecked text never goes to a hosted model"
        call = self._stub.Speculate(timeout=remaining, metadata=self._metadata())
        first = inference_pb2.SpeculateRequest(request=_generate_request(model, content, params))
        return HeldGeneration(call, asyncio.create_task(call.write(first)))

    async def list_models(self, timeout: float | None) -> list[ModelInfo]:
        try:
            reply = await self._stub.ListModels(
                inference_pb2.ListModelsRequest(), timeout=timeout, metadata=self._metadata()
            )
        except grpc.aio.AioRpcError as exc:
            raise upstream_error(self._service, exc) from None
        return [
            ModelInfo(
                m.name,
                m.revision,
                m.context_size,
                m.is_default and not self.hosted,
                tuple(m.aliases),
                provider=m.provider,
                hosted=self.hosted,
                supports_json_schema=m.supports_json_schema or not self.hosted,
                supports_grammar=m.supports_grammar or not self.hosted,
            )
            for m in reply.models
        ]


@dataclass
class Backends:
    """The typed clients, all on one channel to Envoy's internal listener."""

    auth: AuthClient
    sanitizer: SanitizerClient
    cache: CacheClient
    inference: InferenceClient
    upstream: InferenceClient | None = None
    """Hosted models (the upstream service); None: local models only."""

    def generator(self, model: ModelInfo) -> InferenceClient:
        """The client of the backend that serves `model`."""
        if model.hosted and self.upstream is not None:
            return self.upstream
        return self.inference

    @classmethod
    def over(
        cls,
        channel: grpc.aio.Channel,
        limit_s: float,
        store_interval_s: float,
        policy_stale_s: float = 5.0,
        settle_delay_s: float = 0.0,
    ) -> Backends:
        return cls(
            AuthClient(auth_pb2_grpc.AuthServiceStub(channel), limit_s, settle_delay_s),
            SanitizerClient(
                sanitizer_pb2_grpc.SanitizerServiceStub(channel), limit_s, policy_stale_s
            ),
            CacheClient(cache_pb2_grpc.CacheServiceStub(channel), limit_s, store_interval_s),
            InferenceClient(inference_pb2_grpc.InferenceServiceStub(channel)),
            InferenceClient(inference_pb2_grpc.InferenceServiceStub(channel), hosted=True),
        )
