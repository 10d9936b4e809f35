"""Plain fakes of the router's typed backend clients (services/router/backends.py):
no gRPC call objects, just the methods the pipeline calls, recording what it asked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headrace.services.router.audit import AuditLog
from headrace.services.router.backends import (
    Backends,
    Checked,
    ModelInfo,
    NoFilter,
    Piece,
    Principal,
    ResponseKey,
    SpeculationFailed,
    Usage,
    Verdict,
)
from headrace.services.router.content import Content
from headrace.services.router.orchestrator import Orchestrator
from headrace.services.router.settings import RouterSettings
from headrace.types.v1 import types_pb2

STOP = types_pb2.FINISH_REASON_STOP
USAGE = Usage(3, 2)
ALICE = Principal("alice", "free")


def answer(*texts: str, finish: int = STOP, usage: Usage = USAGE) -> list[Piece]:
    """Pieces of a response: the texts, then the end."""
    return [*(Piece(t) for t in texts), Piece(finish_reason=finish, usage=usage)]


@dataclass
class FakeAuth:
    principal: Principal = ALICE
    error: BaseException | None = None
    asked: list[dict[str, Any]] = field(default_factory=list)
    settled: list[tuple[Principal, int]] = field(default_factory=list)

    async def authorize(self, credential: str, remaining: float | None, **kw: Any) -> Principal:
        self.asked.append({"credential": credential, **kw})
        if self.error is not None:
            raise self.error
        return self.principal

    def settle(self, principal: Principal, used_tokens: int) -> None:
        self.settled.append((principal, used_tokens))


@dataclass
class FakeSanitizer:
    """Lets everything through; `redact` maps a text to its redacted form."""

    output_filtered: bool = False
    redact_map: dict[str, str] = field(default_factory=dict)
    error: BaseException | None = None
    blocked_after: int | None = None
    output_error: BaseException | None = None
    checked: list[tuple[Content, str]] = field(default_factory=list)

    async def check(self, content: Content, tier: str, remaining: float | None) -> Checked:
        self.checked.append((content, tier))
        if self.error is not None:
            raise self.error
        turns = [type(t)(t.role, self.redact_map.get(t.content, t.content)) for t in content.turns]
        prompt = self.redact_map.get(content.prompt, content.prompt)
        redactions = (
            ("pii.email",) if prompt != content.prompt or turns != list(content.turns) else ()
        )
        return Checked(content.with_text(prompt, turns), redactions, self.output_filtered)

    async def redact(self, text: str, remaining: float | None) -> str:
        return self.redact_map.get(text, text)

    async def output_rules(self, tier: str, remaining: float | None) -> Any:
        if self.output_error is not None:
            raise self.output_error
        return FakeOutputRules(self.output_filtered, self.blocked_after)


@dataclass
class FakeOutputRules:
    """A tier's output policy: filtered (a BlockingFilter) or not."""

    filtered: bool
    blocked_after: int | None

    @property
    def digest(self) -> str:
        return "filtered" if self.filtered else "unfiltered"

    def filter(self) -> Any:
        return BlockingFilter(self.blocked_after) if self.filtered else NoFilter()


class BlockingFilter:
    """Passes `allowed` pieces, then blocks (None: never blocks)."""

    def __init__(self, allowed: int | None) -> None:
        self.allowed = allowed
        self.fed = 0

    def feed(self, text: str, end: bool) -> Verdict:
        self.fed += 1
        if self.allowed is not None and self.fed > self.allowed:
            return Verdict("", blocked=True)
        return Verdict(text)

    def close(self) -> None:
        return None


class RecordingCopy:
    """The cache copy: what the pipeline sent, and how it ended."""

    def __init__(self, key: ResponseKey | None) -> None:
        self.key = key
        self.texts: list[str] = []
        self.final: Piece | None = None
        self.closed = False

    async def add(self, text: str) -> None:
        self.texts.append(text)

    async def complete(self, final: Piece) -> None:
        self.final = final

    async def stored(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeCache:
    """Misses unless `hit` is set; records lookups and copies."""

    hit: list[Piece] | None = None
    unanswered: bool = False
    """The Answer call failed before answering (the cache down, a failed flight)."""
    lookups: list[ResponseKey] = field(default_factory=list)
    copies: list[RecordingCopy] = field(default_factory=list)

    def answer(self, key: ResponseKey, remaining: float | None) -> FakeAnswer:
        return FakeAnswer(self, key)

    async def copy(self, key: ResponseKey) -> RecordingCopy:
        self.copies.append(RecordingCopy(key))
        return self.copies[-1]

    def no_copy(self) -> RecordingCopy:
        return RecordingCopy(None)


@dataclass
class FakeAnswer:
    """One cache.Answer call: the hit, or after a miss the copy on the same call."""

    cache: FakeCache
    key: ResponseKey

    async def hits(self) -> AsyncIterator[Piece]:
        self.cache.lookups.append(self.key)
        for piece in self.cache.hit or []:
            yield piece

    def copy(self) -> RecordingCopy | None:
        if self.cache.hit or self.cache.unanswered:
            return None
        self.cache.copies.append(RecordingCopy(self.key))
        return self.cache.copies[-1]


@dataclass
class FakeHeld:
    """A speculative generation: what was prefilled, and whether it was committed
    or cancelled (a held one is neither)."""

    model: str
    content: Content
    params: types_pb2.SamplingParams
    answer: list[Piece] | BaseException
    committed: bool = False
    cancelled: bool = False

    @property
    def held(self) -> bool:
        return not self.committed and not self.cancelled

    async def commit(self) -> AsyncIterator[Piece]:
        assert not self.cancelled, "committed after its cancel"
        self.committed = True
        if isinstance(self.answer, BaseException):
            raise SpeculationFailed() from self.answer
        for piece in self.answer:
            yield piece

    def cancel(self) -> None:
        if not self.committed:
            self.cancelled = True


@dataclass
class FakeInference:
    """Serves `models`; each model answers with `answers[model]` (pieces, or an
    exception raised before any piece)."""

    models: list[ModelInfo] = field(
        default_factory=lambda: [ModelInfo("served", "r1", 2048, is_default=True)]
    )
    answers: dict[str, list[Piece] | BaseException] = field(default_factory=dict)
    default: list[Piece] = field(default_factory=lambda: answer("fresh"))
    asked: list[dict[str, Any]] = field(default_factory=list)
    held: list[FakeHeld] = field(default_factory=list)
    """Speculative generations, in order."""
    speculation_error: BaseException | None = None
    """Set: every speculation fails before its first piece (no slot, preempted)."""

    def speculate(
        self,
        model: str,
        content: Content,
        params: types_pb2.SamplingParams,
        remaining: float | None,
    ) -> FakeHeld:
        answer = self.speculation_error or self.answers.get(model, self.default)
        self.held.append(FakeHeld(model, content, params, answer))
        return self.held[-1]

    async def generate(
        self,
        model: str,
        content: Content,
        params: types_pb2.SamplingParams,
        remaining: float | None,
    ) -> AsyncIterator[Piece]:
        self.asked.append({"model": model, "content": content, "params": params})
        result = self.answers.get(model, self.default)
        if isinstance(result, BaseException):
            raise result
        for piece in result:
            yield piece

    async def list_models(self, timeout: float | None) -> list[ModelInfo]:
        return self.models


@dataclass
class Fakes:
    auth: FakeAuth = field(default_factory=FakeAuth)
    sanitizer: FakeSanitizer = field(default_factory=FakeSanitizer)
    cache: FakeCache = field(default_factory=FakeCache)
    inference: FakeInference = field(default_factory=FakeInference)

    def orchestrator(self, tmp_path: Path, **settings: Any) -> Orchestrator:
        backends = Backends(self.auth, self.sanitizer, self.cache, self.inference)  # type: ignore[arg-type]
        audit = AuditLog(tmp_path / "audit", queue_size=64)
        return Orchestrator(backends, RouterSettings(**settings), audit)


def audit_lines(orchestrator: Orchestrator) -> list[dict[str, Any]]:
    """What the orchestrator queued for the audit log (the writer is not started)."""
    queue = orchestrator._audit._queue
    return [line for line in list(queue._queue) if line is not None]  # type: ignore[attr-defined]
