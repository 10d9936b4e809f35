"""Admission hidden behind prefill (issue 22), for local models only.

While auth.Authorize and sanitizer.CheckPrompt run, the router may already have
local inference prefill the prompt as it came (inference.Speculate): the model's
work on the prompt overlaps admission's, and the first token is ready when both
say yes. The rules, all enforced here and in the pipeline (orchestrator.py):

- Only a credential auth admitted within the last `speculate_window_seconds`, and
  not refused since (by auth, its quota or the sanitizer) within that window,
  speculates: an unknown credential, or a client over its quota, cannot buy prefill
  work with requests that are refused.
- Only a local model: unchecked text never goes to a hosted upstream.
- Nothing leaves inference before the commit, and the router commits only when
  both answered yes and the request is served by exactly the speculated model,
  content (the sanitizer changed nothing) and parameters. Anything else (a
  refusal, a redaction, a cache hit, a single-flight follower, another model or
  other parameters after planning, the client gone) cancels the call: inference
  drops the sequence within one step and clears the KV cells it wrote, and the
  checked request, if any, is generated afresh.
- A speculation that fails (no free slot, preempted by a checked request, an
  inference that does not know Speculate) costs nothing but the fresh request.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from headrace.services.router import metrics
from headrace.services.router.backends import HeldGeneration, ModelInfo, Piece, SpeculationFailed
from headrace.services.router.content import Content
from headrace.types.v1 import types_pb2


def _key(credential: str) -> bytes:
    """Credentials are remembered by digest: the raw one never sits in this table."""
    return hashlib.blake2b(credential.encode(), digest_size=16).digest()


@dataclass
class _Seen:
    admitted: float | None = None
    refused: float | None = None
    tier: str = ""
    """The tier auth gave the credential when it was last admitted."""


class AdmissionMemory:
    """Which credentials admission let through, or refused, in the last `window` s."""

    def __init__(
        self,
        window_s: float,
        size: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window = window_s
        self._size = size
        self._clock = clock
        self._seen: OrderedDict[bytes, _Seen] = OrderedDict()

    def _entry(self, credential: str) -> _Seen:
        key = _key(credential)
        entry = self._seen.pop(key, None) or _Seen()
        self._seen[key] = entry
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return entry

    def admitted(self, credential: str, tier: str) -> None:
        entry = self._entry(credential)
        entry.admitted = self._clock()
        entry.tier = tier

    def refused(self, credential: str) -> None:
        self._entry(credential).refused = self._clock()

    def recent_tier(self, credential: str) -> str | None:
        """The tier auth gave a credential admitted within the window and not refused
        within it (one that may speculate); None for any other."""
        entry = self._seen.get(_key(credential))
        if entry is None or entry.admitted is None:
            return None
        now = self._clock()
        if entry.refused is not None and now - entry.refused <= self._window:
            return None
        return entry.tier if now - entry.admitted <= self._window else None


@dataclass
class Speculation:
    """A request prefilling in local inference before its admission ended."""

    model: str
    content: Content
    params: types_pb2.SamplingParams
    held: HeldGeneration
    committed: bool = field(default=False, init=False)
    """pieces() was asked for: the router released it (discard is a no-op then)."""
    outcome: str = field(default="", init=False)
    """How it ended (the metric's label), once settled."""

    def serves(self, model: ModelInfo, content: Content, params: types_pb2.SamplingParams) -> bool:
        """Whether the checked request is exactly the one prefilled (and the prefill
        is still held: neither committed nor discarded)."""
        return (
            not self.committed
            and not self.outcome
            and not model.hosted
            and model.name == self.model
            and content == self.content
            and params == self.params
        )

    def _settle(self, outcome: str) -> None:
        if not self.outcome:
            self.outcome = outcome
            metrics.SPECULATIVE_PREFILLS.labels(outcome).inc()

    def discard(self, outcome: str = "discarded") -> None:
        """Cancel the prefill (inference drops it and clears its cells), unless
        committed."""
        if self.committed:
            return
        self.held.cancel()
        self._settle(outcome)

    async def pieces(self, fresh: Callable[[], AsyncIterator[Piece]]) -> AsyncIterator[Piece]:
        """Commit and stream; should the speculation have failed before its first
        piece, the checked request generated afresh (`fresh`)."""
        self.committed = True
        try:
            async with contextlib.aclosing(self.held.commit()) as pieces:
                async for piece in pieces:
                    self._settle("used")
                    yield piece
            return
        except SpeculationFailed:
            self._settle("failed")
        async with contextlib.aclosing(fresh()) as pieces:
            async for piece in pieces:
                yield piece
