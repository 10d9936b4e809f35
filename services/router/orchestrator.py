"""One request's way through the suite, as named stages (docs/architecture.md):

admit  validate; route the task (its max_tokens sizes the quota reservation);
       for a credential admitted recently, a local model's prefill started
       (speculation.py: held in inference until the commit); auth.Authorize (who,
       which tier, reserve tokens, and earlier requests' settlements);
       sanitizer.CheckPrompt under auth's tier (the content as it may go on; for a
       recent credential started beside Authorize under its remembered tier); the
       tier's current output policy (refused when the sanitizer's policy watch is
       lost)
plan   the A/B arm; sampling parameters with defaults; the models to try; whether
       the cache may answer
serve  per model, until one answers: cache.Answer (a hit is replayed), else
       inference.Generate (or the speculation committed, when it prefilled exactly
       this request) through the output filter (in process, under the policy
       the sanitizer publishes) to the client token by token, copying the filtered
       text to the cache on the same cache.Answer stream
finish from the request's record, whatever the outcome: quota settlement,
       feedback memory, metrics, trace attributes, one audit line

The backends are typed clients (backends.py); this module speaks no protobuf
except the shared SamplingParams.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from functools import partial

import grpc

from headrace.services.router import metrics
from headrace.services.router.audit import AuditLog, now_iso
from headrace.services.router.backends import (
    Backends,
    CacheCopy,
    Checked,
    ModelInfo,
    Piece,
    Principal,
    ResponseKey,
    Usage,
)
from headrace.services.router.catalog import ModelCatalog
from headrace.services.router.content import Content, validate
from headrace.services.router.experiments import Arm, Experiments
from headrace.services.router.record import Reply, RequestRecord
from headrace.services.router.settings import RouterSettings
from headrace.services.router.speculation import AdmissionMemory, Speculation
from headrace.services.router.tasks import Route, TaskRouter, fill_unset
from headrace.services.runtime import tracing
from headrace.services.runtime.credentials import within_deadline
from headrace.services.runtime.errors import (
    HeadraceError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    status_code,
)
from headrace.services.runtime.logs import get_logger, request_id_var
from headrace.services.runtime.params import is_deterministic, validate_params
from headrace.types.v1 import types_pb2

log = get_logger(__name__)

# Before its first token, a model that answers with these is skipped for the next.
FALLBACK_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


@dataclass(frozen=True)
class Ask:
    """A Generate request in the router's terms (the servicer converts protobuf)."""

    content: Content
    model: str = ""
    task: str = ""
    params: types_pb2.SamplingParams = field(default_factory=types_pb2.SamplingParams)
    bypass_cache: bool = False


@dataclass(frozen=True)
class Plan:
    """How a request will be served."""

    task: str
    params: types_pb2.SamplingParams
    models: list[ModelInfo]
    cacheable: bool
    """The cache keeps only what repeats (greedy or seeded), and not when bypassed."""


def with_arm(params: types_pb2.SamplingParams, arm: Arm) -> types_pb2.SamplingParams:
    """The request's parameters with the arm's filling the fields the request left unset."""
    return fill_unset(params, arm.params.model_dump())


class Orchestrator:
    """Serves Generate by running each request through admit → plan → serve → finish."""

    def __init__(
        self,
        backends: Backends,
        settings: RouterSettings,
        audit: AuditLog,
        feedback: AuditLog | None = None,
    ) -> None:
        self.backends = backends
        self._settings = settings
        self._audit = audit
        self._feedback = feedback
        self.experiments = Experiments(settings.experiments, settings.home / "experiments.d")
        # request id → (subject, arm label) of recent successful requests, for Feedback.
        self._recent: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self.catalog = ModelCatalog(
            backends.inference,
            settings.models_refresh_seconds,
            backends.upstream,
            settings.model_groups,
        )
        self.tasks = TaskRouter(settings.tasks, settings.task_rules, settings.default_task)
        self.admissions = AdmissionMemory(settings.speculate_window_seconds)

    def fill_params(self, params: types_pb2.SamplingParams) -> types_pb2.SamplingParams:
        """The request's params with every unset field set to its default."""
        return fill_unset(params, self._settings.defaults.model_dump())

    async def authorize(self, credential: str, remaining: float | None) -> Principal:
        """Who the credential names, or auth's UNAUTHENTICATED."""
        return await self.backends.auth.authorize(credential, remaining)

    async def generate(
        self,
        ask: Ask,
        credential: str,
        remaining: float | None,
        principal: Principal | None = None,
    ) -> AsyncIterator[Reply]:
        """The Generate stream, and its record's consequences whatever the outcome.
        With `principal` (a batch item, authorised when its batch was submitted) auth
        is skipped; the content is still checked."""
        record = RequestRecord(request_id_var.get(), ask.model, ask.task)
        try:
            route = await self.admit(record, ask, credential, remaining, principal)
            plan = await self.plan(record, ask, route, remaining)
            async for reply in self.serve(record, plan, remaining):
                if record.sent(reply) and (span := tracing.current_span()) is not None:
                    span.add_event("first_token")
                yield reply
        except (Exception, asyncio.CancelledError) as exc:
            record.failed(exc)
            raise
        finally:
            _drop(record)
            self.finish(record)

    async def admit(
        self,
        record: RequestRecord,
        ask: Ask,
        credential: str,
        remaining: float | None,
        principal: Principal | None,
    ) -> Route:
        """May this request run, and as what: parameters and content well formed,
        the task preset (whose max_tokens sizes the quota reservation), auth's verdict
        and tier, and the content as the sanitizer lets it through under that tier's
        policy."""
        validate_params(ask.params, self._settings.max_tokens_limit)
        validate(ask.content, self._settings.max_conversation_bytes)
        route = self.tasks.route(ask.task, ask.content.routing_text, ask.params)
        record.task = route.task
        if principal is not None:  # a batch item: no hurry, no speculation
            record.principal = principal
            record.checked = await self.backends.sanitizer.check(
                ask.content, principal.tier, remaining
            )
        else:
            # Admitted recently and not refused since (speculation.py's rule, for both
            # the prefill and the early check): the tier auth gave it then, else None.
            recent_tier = self.admissions.recent_tier(credential)
            if recent_tier is not None:
                record.speculation = self._speculate(ask, route, remaining)
            early = self._check_early(ask.content, recent_tier, remaining)
            try:
                record.principal = principal = await self.backends.auth.authorize(
                    credential,
                    remaining,
                    model=ask.model,
                    content_bytes=ask.content.size_bytes,
                    reserve_tokens=self.fill_params(route.params).max_tokens,
                )
                if early is not None and early.tier == principal.tier:
                    record.checked = await early.check
                else:
                    if early is not None:
                        early.cancel()  # checked under a tier that is not this request's
                    record.checked = await self.backends.sanitizer.check(
                        ask.content, principal.tier, remaining
                    )
            except Exception:
                # Refused (auth, quota, sanitizer) or not checkable: this credential
                # does not speculate again for a while.
                self.admissions.refused(credential)
                _drop(record, "refused")
                raise
            finally:
                if early is not None:
                    early.cancel()
            self.admissions.admitted(credential, principal.tier)
            if record.checked.content != ask.content:
                _drop(record)  # redacted: what was prefilled is not what may run
        # Fail closed: without the tier's current output policy nothing is generated.
        record.output = await self.backends.sanitizer.output_rules(principal.tier, remaining)
        return route

    def _check_early(
        self, content: Content, tier: str | None, remaining: float | None
    ) -> EarlyCheck | None:
        """CheckPrompt started beside Authorize, under the tier auth gave this
        credential last time (`tier`: None unless it was admitted recently and not
        refused since, so a refused client buys no sanitizer work)."""
        if not self._settings.check_beside_authorize or tier is None:
            return None
        check = asyncio.ensure_future(self.backends.sanitizer.check(content, tier, remaining))
        return EarlyCheck(tier, check)

    def _speculate(self, ask: Ask, route: Route, remaining: float | None) -> Speculation | None:
        """Start the likely model's prefill of the content as it came, for a credential
        admitted recently and not refused since, when the other rules allow
        (speculation.py): speculation on, the model known and local."""
        s = self._settings
        if not s.speculate:
            return None
        names = [ask.model] if ask.model else [*route.models, *s.fallback_models]
        model = self.catalog.known(names[0] if names else "")
        if model is None or model.hosted:
            return None
        params = self.fill_params(route.params)
        held = self.backends.inference.speculate(model.name, ask.content, params, remaining)
        return Speculation(model.name, ask.content, params, held)

    async def plan(
        self, record: RequestRecord, ask: Ask, route: Route, remaining: float | None
    ) -> Plan:
        """The subject's A/B arm (its parameters sit between the request's own and the
        preset's; its model is tried first), the parameters with defaults, the models
        to try in order, and whether the cache may answer."""
        assert record.principal is not None
        assignment = self.experiments.for_request(route.task, record.principal.subject)
        if assignment is not None:
            record.arm = assignment.label
            params = with_arm(ask.params, assignment.arm)
            route = self.tasks.route(route.task, ask.content.routing_text, params)
            if assignment.arm.model:
                route = Route(route.task, route.params, [assignment.arm.model, *route.models])
        params = self.fill_params(route.params)
        models = await self.catalog.candidates(
            ask.model,
            route.models,
            self._settings.fallback_models,
            within_deadline(remaining, self._settings.upstream_timeout_seconds),
        )
        models = self.eligible(models, record.principal, ask.content)
        cacheable = not ask.bypass_cache and is_deterministic(params)
        return Plan(route.task, params, models, cacheable)

    def eligible(
        self, models: list[ModelInfo], principal: Principal, content: Content
    ) -> list[ModelInfo]:
        """The candidates this request may go to: hosted models only for a tier or
        subject that opted in, and only when they honour the output constraint."""
        s = self._settings
        opted_in = principal.tier in s.hosted_tiers or principal.subject in s.hosted_subjects
        constraint = content.response_format.WhichOneof("format")
        kept, reasons = [], []
        for model in models:
            if not model.hosted:
                kept.append(model)
            elif not opted_in:
                reasons.append(
                    f"{model.name!r} is hosted by {model.provider} and tier "
                    f"{principal.tier!r} has not opted in to hosted models (hosted_tiers)"
                )
            elif constraint == "grammar" and not model.supports_grammar:
                reasons.append(f"{model.name!r} ({model.provider}) cannot honour a grammar")
            elif constraint == "json_schema" and not model.supports_json_schema:
                reasons.append(f"{model.name!r} ({model.provider}) cannot honour a JSON Schema")
            else:
                kept.append(model)
        if not kept:
            raise PermissionDenied(f"no model this request may use: {'; '.join(reasons)}")
        return kept

    async def serve(
        self, record: RequestRecord, plan: Plan, remaining: float | None
    ) -> AsyncIterator[Reply]:
        """The plan's first model that answers: before its first token, a model that
        is unavailable or overloaded gives way to the next."""
        for attempt, model in enumerate(plan.models):
            record.model = model.name
            record.provider = model.provider
            if model.provider:
                record.offered_to.append(model.provider)
            sent = False
            try:
                async for reply in self._answer(record, plan, model, remaining):
                    sent = True
                    yield reply
                return
            except (HeadraceError, grpc.aio.AioRpcError) as exc:
                code = status_code(exc)
                if sent or attempt == len(plan.models) - 1 or code not in FALLBACK_CODES:
                    raise
                log.warning(
                    "model_fallback",
                    model=model.name,
                    next_model=plan.models[attempt + 1].name,
                    code=code.name if code else "",
                )

    async def _answer(
        self, record: RequestRecord, plan: Plan, model: ModelInfo, remaining: float | None
    ) -> AsyncIterator[Reply]:
        """One model's answer: replayed from the cache, else generated."""
        assert record.principal is not None and record.checked is not None
        assert record.output is not None
        key = ResponseKey(
            model,
            record.checked.content,
            plan.params,
            record.principal.subject,
            plan.task,
            record.output.digest,
        )
        reply = partial(
            Reply,
            model=model.name,
            request_id=record.request_id,
            task=plan.task,
            arm=record.arm,
            provider=model.provider,
        )
        cache = self.backends.cache
        if not plan.cacheable:
            copy = cache.no_copy()
        else:
            # One cache.Answer call: a hit is replayed; a miss leaves the same stream
            # open for the copy of what is generated instead.
            answer = cache.answer(key, remaining)
            hit = False
            async with contextlib.aclosing(answer.hits()) as hits:
                async for piece in hits:
                    if not hit:
                        _drop(record)  # served from the cache (or another's flight)
                    hit = True
                    yield reply(piece.text, piece.finish_reason, _usage(piece), cached=True)
            if hit:
                return
            # A cache that failed to answer (or a flight that failed before its first
            # chunk) still gets the copy, on a Store call of its own.
            copy = answer.copy() or await cache.copy(key)
        try:
            async for piece in self._generate(record, plan, key, remaining, copy):
                yield reply(piece.text, piece.finish_reason, _usage(piece))
        finally:
            copy.close()

    async def _generate(
        self,
        record: RequestRecord,
        plan: Plan,
        key: ResponseKey,
        remaining: float | None,
        copy: CacheCopy,
    ) -> AsyncIterator[Piece]:
        """Inference → output filter → client, the filtered text copied to the cache."""
        assert record.checked is not None and record.output is not None
        checked = record.checked
        out = record.output.filter()
        fresh = partial(
            self.backends.generator(key.model).generate,
            key.model.name,
            checked.content,
            plan.params,
            remaining,
        )
        speculation = record.speculation
        if speculation is not None and speculation.serves(key.model, checked.content, plan.params):
            # Both said yes to exactly what was prefilled: release it.
            pieces = speculation.pieces(fresh)
        else:
            _drop(record)
            pieces = fresh()
        redacted = False
        try:
            async with contextlib.aclosing(pieces):
                async for piece in pieces:
                    verdict = out.feed(piece.text, end=piece.last)
                    redacted = redacted or verdict.redacted
                    if verdict.text:
                        # The client first: the cache copy is written when the next
                        # piece is asked for, off the path to the client's screen.
                        yield Piece(verdict.text)
                        await copy.add(verdict.text)
                    if verdict.blocked:
                        yield Piece(finish_reason=types_pb2.FINISH_REASON_CONTENT_FILTER)
                        return
                    if piece.last:
                        if redacted and checked.content.constrained:
                            # Redacted JSON may no longer parse: the finish reason says so.
                            piece = replace(
                                piece, finish_reason=types_pb2.FINISH_REASON_CONTENT_FILTER
                            )
                        await copy.complete(piece)
                        yield Piece(finish_reason=piece.finish_reason, usage=piece.usage)
                        await copy.stored()
                        return
            raise Unavailable("inference ended without a final message; retry the request")
        finally:
            out.close()

    def finish(self, record: RequestRecord) -> None:
        """Everything a request leaves behind, computed from its record in one place."""
        seconds = record.seconds
        principal = record.principal
        if principal is not None:
            if record.status == "OK":
                self._remember(record.request_id, principal.subject, record.arm)
            if record.used_tokens != principal.reserved_tokens:
                self._settle(principal, record.used_tokens)
        labels = record.labels
        if (span := tracing.current_span()) is not None:
            span.set_attributes(
                {
                    **{f"headrace.{k}": v or metrics.NONE for k, v in labels.items()},
                    "headrace.cached": record.cached,
                    "headrace.finish_reason": record.finish_reason,
                    "headrace.prompt_tokens": record.usage.prompt_tokens,
                    "headrace.completion_tokens": record.usage.completion_tokens,
                }
            )
        metrics.record(
            **labels,
            code=record.status,
            cached=record.cached,
            seconds=seconds,
            first_token_seconds=record.first_token_s,
            prompt_tokens=record.usage.prompt_tokens,
            completion_tokens=record.usage.completion_tokens,
        )
        line = record.audit_line(round(seconds * 1000, 2))
        self._audit.record(line)
        log.info(
            "request_finished",
            status=record.status,
            subject=line["subject"],
            model=line["model"],
            cached=record.cached,
            latency_ms=line["latency_ms"],
        )

    def _settle(self, principal: Principal, used: int) -> None:
        """Replace the quota reservation by the tokens really used, off the request path
        (with the next Authorize, when one comes soon)."""
        self.backends.auth.settle(principal, used)

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
                comment = await self.backends.sanitizer.redact(comment, remaining)
            except (HeadraceError, grpc.aio.AioRpcError):
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


@dataclass(frozen=True)
class EarlyCheck:
    """sanitizer.CheckPrompt running beside auth.Authorize under a remembered tier."""

    tier: str
    check: asyncio.Future[Checked]

    def cancel(self) -> None:
        """Drop it unless its answer was used (a refusal it raised is then read)."""
        if not self.check.done():
            self.check.cancel()
        elif not self.check.cancelled():
            self.check.exception()  # read, so an unused refusal is not logged as lost


def _drop(record: RequestRecord, outcome: str = "discarded") -> None:
    """Cancel the request's speculation, if it has one not yet committed."""
    if record.speculation is not None:
        record.speculation.discard(outcome)


def _usage(piece: Piece) -> Usage | None:
    """Usage goes on the last message only."""
    return piece.usage if piece.last else None
