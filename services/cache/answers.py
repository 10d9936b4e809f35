"""Where a request's answer comes from, in one place (no gRPC here).

`Answers.find` applies the lookup order: a stored entry for the exact key; else an
identical request being generated now (single-flight: follow it); else, with the
semantic cache on, a stored answer to a prompt close in meaning; else a miss, which
opens a flight for the key. `Answers.record` is the other half of that contract: the
response being stored feeds the key's flight and ends it. A flight whose recording
does not start within `Flights`' start timeout fails, so followers are never left
waiting for a Store that will not come (cache.proto documents this for callers).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from headrace.services.cache import metrics
from headrace.services.cache.flights import Final, Flight, Flights
from headrace.services.cache.responses import Entry, ResponseCache, cache_key
from headrace.services.cache.semantic import SemanticIndex
from headrace.types.v1 import types_pb2

COMPLETE = (types_pb2.FINISH_REASON_STOP, types_pb2.FINISH_REASON_LENGTH)
"""Finish reasons of a response worth keeping."""


@dataclass(frozen=True)
class Question:
    """What makes two requests equal for the cache, as the cache service sees it."""

    model: str
    revision: str
    digest: str
    """The caller's opaque digest of the request's content ("": the prompt is the content)."""
    prompt: str
    """The prompt: the content when there is no digest, and the text the semantic cache
    compares ("" for none)."""
    params: dict[str, Any]
    deterministic: bool
    subject: str
    task: str
    output_policy: str = ""
    """A digest of the output policy the response is filtered with ("": none given):
    an answer filtered under one policy never answers under another."""


@dataclass(frozen=True)
class Stored:
    """A stored entry answers (exactly, or by a similar prompt when `similar`)."""

    entry: Entry
    similar: bool = False


@dataclass(frozen=True)
class Following:
    """An identical request is generating: follow its flight."""

    flight: Flight


@dataclass(frozen=True)
class Missed:
    """Nothing answers; the caller generates (and, if cacheable, leads a new flight)."""


@dataclass
class Answers:
    """The lookup order, single-flight and semantic matching over a response store."""

    cache: ResponseCache
    flights: Flights
    ttl_seconds: int
    per_subject: bool
    semantic: SemanticIndex | None = None
    semantic_models: frozenset[str] = frozenset()
    semantic_tasks: frozenset[str] = frozenset()
    counts: dict[str, int] = field(
        default_factory=lambda: {"hit": 0, "shared": 0, "semantic": 0, "miss": 0, "stores": 0}
    )
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    def key(self, question: Question) -> str:
        """The store key of a question."""
        subject = question.subject if self.per_subject else ""
        return cache_key(
            question.model,
            question.prompt,
            question.params,
            subject,
            question.revision,
            question.digest,
            question.output_policy,
        )

    def _scope(self, question: Question) -> str | None:
        """The scope a prompt is compared within, or None when semantic matching is off."""
        if self.semantic is None or not question.prompt or not question.deterministic:
            return None
        if self.semantic_models and question.model not in self.semantic_models:
            return None
        if self.semantic_tasks and question.task not in self.semantic_tasks:
            return None
        subject = question.subject if self.per_subject else ""
        return (
            cache_key(
                question.model,
                "",
                question.params,
                subject,
                question.revision,
                output_policy=question.output_policy,
            )
            + ":"
            + question.task
        )

    def _count(self, result: str, started: float | None = None) -> None:
        metrics.LOOKUPS.labels(result).inc()
        self.counts[result] += 1
        if started is not None:
            metrics.LOOKUP_LATENCY.observe(time.perf_counter() - started)

    async def find(self, question: Question) -> Stored | Following | Missed:
        """The answer to a question, in the documented order."""
        started = time.perf_counter()
        if not question.deterministic:
            self._count("miss", started)
            return Missed()
        key = self.key(question)
        entry = await self.cache.store.get(key)
        if entry is not None:
            self._count("hit", started)
            return Stored(entry)
        flight = self.flights.get(key)
        if flight is not None:
            self._count("shared")
            return Following(flight)
        similar = await self._similar(question)
        if similar is not None:
            self._count("semantic", started)
            return Stored(similar, similar=True)
        self.flights.open(key)
        self._count("miss", started)
        return Missed()

    async def _similar(self, question: Question) -> Entry | None:
        scope = self._scope(question)
        if scope is None or self.semantic is None:
            return None
        match = await self.semantic.nearest(scope, question.prompt)
        return await self.cache.store.get(match[0]) if match else None

    def record(self, question: Question) -> Recording:
        """A response being stored for `question`; it feeds the key's flight, if any."""
        key = self.key(question)
        flight = self.flights.claim(key) if question.deterministic else None
        return Recording(self, question, key, flight)

    async def _keep(self, recording: Recording, final: Final) -> bool:
        entry = Entry(
            recording.chunks, final.finish_reason, final.prompt_tokens, final.completion_tokens
        )
        stored = await self.cache.store.put(recording.key, entry, self.ttl_seconds)
        if stored:
            self.counts["stores"] += 1
            scope = self._scope(recording.question)
            if scope is not None and self.semantic is not None:
                # Embedding takes tens of ms: off the request's path.
                task = asyncio.create_task(
                    self.semantic.add(scope, recording.question.prompt, recording.key)
                )
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return stored


@dataclass
class Recording:
    """One response as Store receives it: text in order, then how it ended."""

    answers: Answers
    question: Question
    key: str
    flight: Flight | None
    chunks: list[str] = field(default_factory=list)

    async def add(self, text: str) -> None:
        self.chunks.append(text)
        if self.flight is not None:
            await self.flight.add(text)

    async def end(self, final: Final | None) -> bool:
        """Keep the response when it completed (`final` with a finish reason worth
        keeping) and is cacheable; end the flight either way. Whether it was stored."""
        if final is not None and final.finish_reason not in COMPLETE:
            final = None
        stored = False
        try:
            if final is not None and self.question.deterministic:
                # Stored before the flight closes: an identical request arriving in
                # between follows the flight, one arriving after finds the entry.
                stored = await self.answers._keep(self, final)
        finally:
            if self.flight is not None:
                await self.answers.flights.close(self.flight, final)
        outcome = (
            "incomplete"
            if final is None
            else "not_cacheable"
            if not self.question.deterministic
            else "stored"
            if stored
            else "rejected"
        )
        metrics.STORES.labels(outcome).inc()
        return stored
