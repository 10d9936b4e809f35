"""One request's way through the suite (ARCHITECTURE §3):

auth.Authorize and sanitizer.CheckPrompt concurrently → cache.Lookup (a hit is
replayed) → inference.Generate streamed through sanitizer.FilterStream to the
client token by token, while cache.Store receives the same text → one audit
line, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any

import grpc

from headrace.auth.v1 import auth_pb2, auth_pb2_grpc
from headrace.cache.v1 import cache_pb2, cache_pb2_grpc
from headrace.inference.v1 import inference_pb2, inference_pb2_grpc
from headrace.router.v1 import router_pb2
from headrace.sanitizer.v1 import sanitizer_pb2, sanitizer_pb2_grpc
from headrace.services.router import metrics
from headrace.services.router.audit import AuditLog, now_iso
from headrace.services.router.experiments import Arm, Experiments
from headrace.services.router.settings import RouterSettings
from headrace.services.router.tasks import Route, TaskRouter, fill_unset
from headrace.services.runtime import tracing
from headrace.services.runtime.errors import HeadraceError, InvalidArgument, NotFound, Unavailable
from headrace.services.runtime.interceptors import outgoing_metadata
from headrace.services.runtime.logs import get_logger, request_id_var
from headrace.services.runtime.params import is_deterministic, validate_params
from headrace.types.v1 import types_pb2

log = get_logger(__name__)

SUMMARY_CHARS = 120
TIER_HINTS = 4096
"""API keys whose tier the router remembers (by SHA-256 digest, never the key itself)."""
# Before its first token, a model that answers with these is skipped for the next.
FALLBACK_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


@dataclass
class Backends:
    """Stubs of the internal services, all on one channel to Envoy's internal listener."""

    auth: auth_pb2_grpc.AuthServiceStub
    sanitizer: sanitizer_pb2_grpc.SanitizerServiceStub
    cache: cache_pb2_grpc.CacheServiceStub
    inference: inference_pb2_grpc.InferenceServiceStub

    @classmethod
    def over(cls, channel: grpc.aio.Channel) -> Backends:
        return cls(
            auth_pb2_grpc.AuthServiceStub(channel),
            sanitizer_pb2_grpc.SanitizerServiceStub(channel),
            cache_pb2_grpc.CacheServiceStub(channel),
            inference_pb2_grpc.InferenceServiceStub(channel),
        )


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
    if exc.code() == grpc.StatusCode.ABORTED:
        # A shared (single-flight) generation stopped: retrying is the remedy.
        return Unavailable(exc.details() or "retry the request")
    return exc


# A cache.Store call that failed: the cache is optional, so a cache service that
# fails mid-stream costs the response its cache copy, never the response.
_STORE_ERRORS = (grpc.aio.AioRpcError, asyncio.InvalidStateError)


async def _store_write(
    store: grpc.aio.StreamUnaryCall | None, message: cache_pb2.StoreRequest, *, last: bool = False
) -> grpc.aio.StreamUnaryCall | None:
    """Send one message of the cache copy (`last` closes the stream); the call, or None
    once it has failed (the copy is given up, logged, and the response goes on)."""
    if store is None:
        return None
    try:
        await store.write(message)
        if last:
            await store.done_writing()
    except _STORE_ERRORS as exc:
        log.warning("cache_store_failed", error=str(exc) or type(exc).__name__)
        store.cancel()
        return None
    return store


class _StoreBuffer:
    """The response text not yet sent to the cache. One cache.Store message per token
    would cost the router, Envoy and the cache a message each per token; gathering
    `interval` seconds of text costs single-flight followers at most that much lag.
    The first piece goes at once, so followers' first token is not held back."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._pieces: list[str] = []
        self._since = -math.inf

    def add(self, text: str) -> str:
        """Take a piece; the text to send now ("" while gathering)."""
        self._pieces.append(text)
        now = time.monotonic()
        if now - self._since < self._interval:
            return ""
        self._since = now
        return self.take()

    def take(self) -> str:
        text = "".join(self._pieces)
        self._pieces.clear()
        return text


class ModelCatalog:
    """The models inference serves, refreshed at most every `ttl` seconds."""

    def __init__(self, inference: inference_pb2_grpc.InferenceServiceStub, ttl: float) -> None:
        self._inference = inference
        self._ttl = ttl
        self._models: list[inference_pb2.ModelInfo] = []
        self._fetched = 0.0
        self._lock = asyncio.Lock()

    async def models(self, timeout: float) -> list[inference_pb2.ModelInfo]:
        async with self._lock:
            if not self._models or time.monotonic() - self._fetched > self._ttl:
                try:
                    reply = await self._inference.ListModels(
                        inference_pb2.ListModelsRequest(),
                        timeout=timeout,
                        metadata=outgoing_metadata(),
                    )
                except grpc.aio.AioRpcError as exc:
                    raise upstream_error("inference", exc) from None
                self._models = list(reply.models)
                self._fetched = time.monotonic()
        return self._models

    async def resolve(self, name: str, timeout: float) -> inference_pb2.ModelInfo:
        """The served model a request names ("" is the default), or NotFound."""
        models = await self.models(timeout)
        for model in models:
            if (name and model.name == name) or (not name and model.is_default):
                return model
        raise NotFound(f"unknown model {name!r}; available: {', '.join(m.name for m in models)}")


def claimed_tier(credential: str) -> str:
    """The `tier` claim of a JWT, unverified ("" for API keys or anything else)."""
    parts = credential.split(".")
    if len(parts) != 3:
        return ""
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError):
        return ""
    tier = payload.get("tier") if isinstance(payload, dict) else None
    return tier if isinstance(tier, str) else ""


def with_arm(params: types_pb2.SamplingParams, arm: Arm) -> types_pb2.SamplingParams:
    """The request's parameters with the arm's filling the fields the request left unset."""
    return fill_unset(params, arm.params.model_dump())


def _summary(text: str) -> str:
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS] + "…"


class Orchestrator:
    """Serves Generate by calling the internal services in order."""

    def __init__(
        self,
        backends: Backends,
        settings: RouterSettings,
        audit: AuditLog,
        feedback: AuditLog | None = None,
    ) -> None:
        self._b = backends
        self._settings = settings
        self._audit = audit
        self._feedback = feedback
        self.experiments = Experiments(settings.experiments)
        # request id → (subject, arm label) of recent successful requests, for Feedback.
        self._recent: OrderedDict[str, tuple[str, str]] = OrderedDict()
        # API key digest → the tier auth last gave it: lets the prompt check run
        # beside Authorize under the right policy (a JWT names its tier itself).
        self._tier_hints: OrderedDict[bytes, str] = OrderedDict()
        self.catalog = ModelCatalog(backends.inference, settings.models_refresh_seconds)
        self.tasks = TaskRouter(settings.tasks, settings.task_rules, settings.default_task)
        self._background: set[asyncio.Task[None]] = set()

    def _timeout(self, remaining: float | None) -> float:
        limit = self._settings.upstream_timeout_seconds
        return limit if remaining is None else max(min(limit, remaining), 0.001)

    def fill_params(self, params: types_pb2.SamplingParams) -> types_pb2.SamplingParams:
        """The request's params with every unset field set to its default."""
        return fill_unset(params, self._settings.defaults.model_dump())

    async def authorize(
        self, credential: str, remaining: float | None
    ) -> auth_pb2.AuthorizeResponse:
        """Who the credential names, or the auth service's UNAUTHENTICATED."""
        try:
            return await self._b.auth.Authorize(
                auth_pb2.AuthorizeRequest(credential=credential),
                timeout=self._timeout(remaining),
                metadata=outgoing_metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            raise upstream_error("auth", exc) from None

    async def _admit(
        self,
        request: router_pb2.GenerateRequest,
        params: types_pb2.SamplingParams,
        credential: str,
        remaining: float | None,
        admitted: auth_pb2.AuthorizeResponse | None = None,
    ) -> tuple[auth_pb2.AuthorizeResponse, sanitizer_pb2.CheckPromptResponse]:
        """Authorize and check the prompt concurrently; the auth verdict comes first."""
        metadata = outgoing_metadata()
        timeout = self._timeout(remaining)

        def check_prompt(tier: str) -> Awaitable[sanitizer_pb2.CheckPromptResponse]:
            return self._b.sanitizer.CheckPrompt(
                sanitizer_pb2.CheckPromptRequest(prompt=request.prompt, tier=tier),
                timeout=timeout,
                metadata=metadata,
            )

        if admitted is not None:
            try:
                checked = await check_prompt(admitted.tier)
            except grpc.aio.AioRpcError as exc:
                raise upstream_error("sanitizer", exc) from None
            return admitted, checked
        # Reserve the worst case from the token quotas: the prompt (estimated at
        # 4 bytes a token, as the sanitizer does) plus everything max_tokens allows.
        reserve = len(request.prompt.encode()) // 4 + 1 + params.max_tokens
        auth = asyncio.ensure_future(
            self._b.auth.Authorize(
                auth_pb2.AuthorizeRequest(
                    credential=credential, model=request.model, reserve_tokens=reserve
                ),
                timeout=timeout,
                metadata=metadata,
            )
        )
        # The tier picks the sanitizer's policy. A JWT carries it, so the check can
        # run beside Authorize; the claim is only trusted because Authorize verifies
        # the same token before anything is used. Otherwise the check runs again.
        claimed = claimed_tier(credential)
        digest = None
        if not claimed:
            digest = hashlib.sha256(credential.encode()).digest()
            claimed = self._tier_hints.get(digest, "")
        check = asyncio.ensure_future(check_prompt(claimed))
        try:
            try:
                principal = await auth
            except grpc.aio.AioRpcError as exc:
                raise upstream_error("auth", exc) from None
            if digest is not None:
                self._hint_tier(digest, principal.tier)
            try:
                checked = await check
                if principal.tier != claimed:
                    checked = await check_prompt(principal.tier)
            except grpc.aio.AioRpcError as exc:
                # The prompt was refused after auth reserved quota for it: give it back.
                if principal.reserved_tokens:
                    self._settle(principal, 0)
                raise upstream_error("sanitizer", exc) from None
        finally:
            for task in (auth, check):
                task.cancel()
        return principal, checked

    async def generate(
        self,
        request: router_pb2.GenerateRequest,
        credential: str,
        remaining: float | None,
        principal: auth_pb2.AuthorizeResponse | None = None,
    ) -> AsyncIterator[router_pb2.GenerateResponse]:
        """The Generate stream, and its audit line. With `principal` (a batch item,
        authorised when its batch was submitted) auth is skipped; the prompt is
        still checked."""
        started = time.perf_counter()
        audit: dict[str, Any] = {
            "time": now_iso(),
            "request_id": request_id_var.get(),
            "subject": None,
            "model": request.model,
            "task": request.task,
            "status": "OK",
            "cached": False,
        }
        response_text: list[str] = []
        # Metric labels: set only from settings and the catalog, never the request.
        labels = {"model": "", "task": "", "arm": ""}
        first_token: float | None = None
        admitted = principal
        principal = None
        try:
            validate_params(request.params, self._settings.max_tokens_limit)
            route = self.tasks.route(request.task, request.prompt, request.params)
            audit["task"] = labels["task"] = route.task
            params = self.fill_params(route.params)
            principal, checked = await self._admit(request, params, credential, remaining, admitted)
            audit["subject"] = principal.subject
            audit["prompt_summary"] = _summary(checked.prompt)
            audit["redactions"] = list(checked.redactions)
            assignment = self.experiments.for_request(route.task, principal.subject)
            arm_label = ""
            if assignment is not None:
                arm_label = audit["arm"] = labels["arm"] = assignment.label
                # The arm's parameters sit between the request's own and the preset's.
                route = self.tasks.route(
                    route.task, request.prompt, with_arm(request.params, assignment.arm)
                )
                if assignment.arm.model:
                    route = Route(route.task, route.params, [assignment.arm.model, *route.models])
                params = self.fill_params(route.params)
            candidates = await self._candidates(request.model, route.models, remaining)
            for attempt, info in enumerate(candidates):
                audit["model"] = labels["model"] = info.name
                key = cache_pb2.CacheKey(
                    model=info.name,
                    revision=info.revision,
                    prompt=checked.prompt,
                    params=params,
                    subject=principal.subject,
                    task=route.task,
                )
                sent = False
                try:
                    stream = self._stream(
                        key,
                        # The cache keeps only what repeats: no lookup, no copy otherwise.
                        request.bypass_cache or not is_deterministic(params),
                        remaining,
                        principal.tier,
                        filtered=not checked.output_unfiltered,
                    )
                    async for response in stream:
                        sent = True
                        response.request_id = audit["request_id"]
                        response.task = route.task
                        response.arm = arm_label
                        response_text.append(response.text)
                        if response.text and first_token is None:
                            first_token = time.perf_counter() - started
                            if (span := tracing.current_span()) is not None:
                                span.add_event("first_token")
                        if response.cached:
                            audit["cached"] = True
                        if response.finish_reason:
                            audit["finish_reason"] = types_pb2.FinishReason.Name(
                                response.finish_reason
                            )
                            audit["prompt_tokens"] = response.usage.prompt_tokens
                            audit["completion_tokens"] = response.usage.completion_tokens
                        yield response
                    break
                except (HeadraceError, grpc.aio.AioRpcError) as exc:
                    code = exc.code if isinstance(exc, HeadraceError) else exc.code()
                    last = attempt == len(candidates) - 1
                    if sent or last or code not in FALLBACK_CODES:
                        raise
                    log.warning(
                        "model_fallback",
                        model=info.name,
                        next_model=candidates[attempt + 1].name,
                        code=code.name,
                    )
        except HeadraceError as exc:
            audit["status"] = exc.code.name
            raise
        except grpc.aio.AioRpcError as exc:
            audit["status"] = exc.code().name
            raise
        except asyncio.CancelledError:
            audit["status"] = "CANCELLED"
            raise
        except Exception:
            audit["status"] = "INTERNAL"
            raise
        finally:
            if audit["status"] == "OK" and audit["subject"] is not None:
                self._remember(audit["request_id"], audit["subject"], audit.get("arm", ""))
            if principal is not None:
                used = (
                    0
                    if audit["cached"] or audit["status"] != "OK"
                    else (audit.get("prompt_tokens", 0) + audit.get("completion_tokens", 0))
                )
                if used != principal.reserved_tokens:
                    self._settle(principal, used)
            elapsed = time.perf_counter() - started
            audit["latency_ms"] = round(elapsed * 1000, 2)
            if (span := tracing.current_span()) is not None:
                span.set_attributes(
                    {
                        "headrace.model": labels["model"] or metrics.NONE,
                        "headrace.task": labels["task"] or metrics.NONE,
                        "headrace.arm": labels["arm"] or metrics.NONE,
                        "headrace.cached": audit["cached"],
                        "headrace.finish_reason": audit.get("finish_reason", ""),
                        "headrace.prompt_tokens": audit.get("prompt_tokens", 0),
                        "headrace.completion_tokens": audit.get("completion_tokens", 0),
                    }
                )
            metrics.record(
                **labels,
                code=audit["status"],
                cached=audit["cached"],
                seconds=elapsed,
                first_token_seconds=first_token,
                prompt_tokens=audit.get("prompt_tokens", 0),
                completion_tokens=audit.get("completion_tokens", 0),
            )
            if audit["subject"] is not None:
                # Only text that passed the sanitizer's filter is ever summarised.
                audit["response_summary"] = _summary("".join(response_text))
            self._audit.record(audit)
            log.info(
                "request_finished",
                status=audit["status"],
                subject=audit["subject"],
                model=audit["model"],
                cached=audit["cached"],
                latency_ms=audit["latency_ms"],
            )

    def _hint_tier(self, digest: bytes, tier: str) -> None:
        """Only a hint: a wrong one costs a second prompt check, never a wrong policy."""
        self._tier_hints[digest] = tier
        self._tier_hints.move_to_end(digest)
        while len(self._tier_hints) > TIER_HINTS:
            self._tier_hints.popitem(last=False)

    def _remember(self, request_id: str, subject: str, arm: str) -> None:
        self._recent[request_id] = (subject, arm)
        while len(self._recent) > self._settings.feedback_window:
            self._recent.popitem(last=False)

    async def feedback(
        self,
        credential: str,
        request_id: str,
        rating: float,
        comment: str,
        remaining: float | None,
    ) -> None:
        """Record a rating of one of the caller's recent responses."""
        principal = await self.authorize(credential, remaining)
        if not 1.0 <= rating <= 5.0:
            raise InvalidArgument("rating must be between 1 and 5")
        if len(comment) > 2000:
            raise InvalidArgument("comment is longer than 2,000 characters")
        known = self._recent.get(request_id)
        if known is None or known[0] != principal.subject:
            raise NotFound(
                f"no recent response {request_id!r} of yours; feedback is taken for the "
                f"last {self._settings.feedback_window} requests this router served"
            )
        if comment:
            try:
                checked = await self._b.sanitizer.CheckPrompt(
                    sanitizer_pb2.CheckPromptRequest(prompt=comment),
                    timeout=self._timeout(remaining),
                    metadata=outgoing_metadata(),
                )
                comment = checked.prompt
            except grpc.aio.AioRpcError:
                comment = "[refused by the sanitizer]"
        if self._feedback is not None:
            self._feedback.record(
                {
                    "time": now_iso(),
                    "request_id": request_id,
                    "subject": principal.subject,
                    "arm": known[1],
                    "rating": rating,
                    "comment": comment,
                }
            )

    async def _candidates(
        self, requested: str, routed: list[str], remaining: float | None
    ) -> list[inference_pb2.ModelInfo]:
        """Models to try in order: the one the request names (only that), else the
        task's models then the fallbacks, else the default model."""
        timeout = self._timeout(remaining)
        if requested:
            return [await self.catalog.resolve(requested, timeout)]
        names = list(dict.fromkeys([*routed, *self._settings.fallback_models]))
        candidates = []
        for name in names:
            try:
                candidates.append(await self.catalog.resolve(name, timeout))
            except NotFound:
                log.warning("routed_model_not_served", model=name)
        return candidates or [await self.catalog.resolve("", timeout)]

    def _settle(self, principal: auth_pb2.AuthorizeResponse, used: int) -> None:
        """Replace the quota reservation by the tokens really used, off the request path."""

        async def settle() -> None:
            try:
                await self._b.auth.RecordUsage(
                    auth_pb2.RecordUsageRequest(
                        subject=principal.subject,
                        tier=principal.tier,
                        reserved_tokens=principal.reserved_tokens,
                        used_tokens=used,
                    ),
                    timeout=self._settings.upstream_timeout_seconds,
                    metadata=outgoing_metadata(),
                )
            except grpc.aio.AioRpcError as exc:
                log.error("usage_not_recorded", subject=principal.subject, error=exc.details())

        task = asyncio.create_task(settle())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _stream(
        self,
        key: cache_pb2.CacheKey,
        bypass_cache: bool,
        remaining: float | None,
        tier: str = "",
        *,
        filtered: bool = True,
    ) -> AsyncIterator[router_pb2.GenerateResponse]:
        if not bypass_cache:
            replayed = False
            async for response in self._replay(key, remaining):
                replayed = True
                yield response
            if replayed:
                return
        async for response in self._generate(key, bypass_cache, remaining, tier, filtered):
            yield response

    async def _replay(
        self, key: cache_pb2.CacheKey, remaining: float | None
    ) -> AsyncIterator[router_pb2.GenerateResponse]:
        """A cache hit as a stream; nothing on a miss or a cache failure (fail-open).

        A hit may be an identical request still generating (single-flight), so the
        lookup runs under the client's deadline, not the short upstream one.
        """
        call = self._b.cache.Lookup(
            cache_pb2.LookupRequest(key=key),
            timeout=remaining,
            metadata=outgoing_metadata(),
        )
        started = False
        try:
            async for chunk in call:
                if not chunk.hit:
                    return
                started = True
                response = router_pb2.GenerateResponse(
                    text=chunk.text, cached=True, model=key.model
                )
                if chunk.finish_reason:
                    response.finish_reason = chunk.finish_reason
                    response.usage.CopyFrom(chunk.usage)
                yield response
        except grpc.aio.AioRpcError as exc:
            if started:
                raise upstream_error("cache", exc) from None
            log.warning("cache_lookup_failed", code=exc.code().name, details=exc.details())
        finally:
            call.cancel()

    async def _generate(
        self,
        key: cache_pb2.CacheKey,
        bypass_cache: bool,
        remaining: float | None,
        tier: str = "",
        filtered: bool = True,
    ) -> AsyncIterator[router_pb2.GenerateResponse]:
        """Inference → output filter → client, teeing the filtered text into the cache.

        Without `filtered` (the sanitizer said the tier's policy has no output rule)
        the pieces go to the client as they come, with no FilterStream round trip.
        """
        metadata = outgoing_metadata()
        generation = self._b.inference.Generate(
            inference_pb2.GenerateRequest(prompt=key.prompt, model=key.model, params=key.params),
            timeout=remaining,
            metadata=metadata,
        )
        output_filter = (
            self._b.sanitizer.FilterStream(timeout=remaining, metadata=metadata)
            if filtered
            else None
        )
        store = None if bypass_cache else self._b.cache.Store(metadata=metadata)
        unsent = _StoreBuffer(self._settings.cache_store_interval_ms / 1000)
        try:
            store = await _store_write(store, cache_pb2.StoreRequest(key=key))
            final: inference_pb2.GenerateResponse | None = None
            blocked = False
            try:
                async for piece in generation:
                    end = piece.finish_reason != types_pb2.FINISH_REASON_UNSPECIFIED
                    if output_filter is None:
                        verdict = sanitizer_pb2.FilterStreamResponse(text=piece.text)
                    else:
                        try:
                            await output_filter.write(
                                sanitizer_pb2.FilterStreamRequest(
                                    text=piece.text, end=end, tier=tier
                                )
                            )
                            verdict = await output_filter.read()
                        except grpc.aio.AioRpcError as exc:
                            # Fail closed: no filter, no more text.
                            raise upstream_error("sanitizer", exc) from None
                        except asyncio.InvalidStateError:  # the filter's call already ended
                            verdict = grpc.aio.EOF
                        if verdict is grpc.aio.EOF:
                            raise Unavailable(
                                "the sanitizer's output filter ended early; retry the request"
                            )
                    if verdict.text:
                        # The client first: the cache copy is written when the next
                        # piece is asked for, off the path to the client's screen.
                        yield router_pb2.GenerateResponse(text=verdict.text, model=key.model)
                        if store is not None and (text := unsent.add(verdict.text)):
                            store = await _store_write(store, cache_pb2.StoreRequest(text=text))
                    if verdict.blocked:
                        blocked = True
                        break
                    if end:
                        final = piece
                        break
            except grpc.aio.AioRpcError as exc:
                raise upstream_error("inference", exc) from None
            last = router_pb2.GenerateResponse(model=key.model)
            if blocked:
                last.finish_reason = types_pb2.FINISH_REASON_CONTENT_FILTER
            elif final is not None:
                last.finish_reason = final.finish_reason
                last.usage.CopyFrom(final.usage)
            else:
                raise Unavailable("inference ended without a final message; retry the request")
            if store is not None and not blocked:
                store = await _store_write(
                    store,
                    cache_pb2.StoreRequest(
                        text=unsent.take(),
                        complete=True,
                        finish_reason=last.finish_reason,
                        usage=last.usage,
                    ),
                    last=True,
                )
            yield last
            if store is not None and not blocked:
                try:
                    await asyncio.wait_for(store, self._settings.upstream_timeout_seconds)
                except (grpc.aio.AioRpcError, TimeoutError) as exc:
                    log.warning("cache_store_failed", error=str(exc))
        finally:
            generation.cancel()
            if output_filter is not None:
                output_filter.cancel()
            if store is not None and not store.done():
                store.cancel()
