"""One request's record: filled in by the pipeline's stages (admit → plan → serve),
read once at the end (finish) for the quota settlement, the audit line and the
metrics, so every outcome is computed in one place from the same facts."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

from headrace.services.router.audit import now_iso
from headrace.services.router.backends import Checked, OutputRules, Piece, Principal, Usage
from headrace.services.router.speculation import Speculation
from headrace.services.runtime.errors import HeadraceError
from headrace.types.v1 import types_pb2

SUMMARY_CHARS = 120


def summary(text: str) -> str:
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS] + "…"


@dataclass
class Reply:
    """One message of a Generate stream, as the router sends it."""

    text: str = ""
    finish_reason: int = types_pb2.FINISH_REASON_UNSPECIFIED
    usage: Usage | None = None
    cached: bool = False
    model: str = ""
    request_id: str = ""
    task: str = ""
    arm: str = ""
    provider: str = ""


@dataclass
class RequestRecord:
    """What happened to one request. Metric labels come only from settings and the
    model catalog (`task`, `arm`, `model`), never from what a caller sent."""

    request_id: str
    requested_model: str = ""
    requested_task: str = ""
    at: str = field(default_factory=now_iso)
    started: float = field(default_factory=time.perf_counter)
    # admit
    speculation: Speculation | None = None
    """The prefill started before admission ended, if any."""
    principal: Principal | None = None
    checked: Checked | None = None
    output: OutputRules | None = None
    # plan
    task: str | None = None
    arm: str = ""
    # serve
    model: str | None = None
    provider: str = ""
    """The hosted provider of the model tried last (the one that answered, if any)."""
    offered_to: list[str] = field(default_factory=list)
    """Every hosted provider the request was offered to, in order (a provider that
    failed or answered 429 may have seen its redacted text too)."""
    cached: bool = False
    first_token_s: float | None = None
    last: Piece | None = None
    text: list[str] = field(default_factory=list)
    # finish
    status: str = "OK"
    refused_by: str = ""
    """The sanitizer's rule or signal that refused the content, when one did."""

    def sent(self, reply: Reply) -> bool:
        """Note one message sent to the client; whether it carried the first text."""
        self.text.append(reply.text)
        first = bool(reply.text) and self.first_token_s is None
        if first:
            self.first_token_s = time.perf_counter() - self.started
        self.cached = self.cached or reply.cached
        if reply.finish_reason:
            self.last = Piece("", reply.finish_reason, reply.usage or Usage())
        return first

    def failed(self, exc: BaseException) -> None:
        """Note how the request ended, when it did not end well."""
        if isinstance(exc, HeadraceError):
            self.status = exc.code.name
        elif isinstance(exc, grpc.aio.AioRpcError):
            self.status = exc.code().name
            # Only the sanitizer sends this key, with the id of what blocked.
            for key, value in exc.trailing_metadata() or ():
                if key == "headrace-decided-by" and isinstance(value, str):
                    self.refused_by = value
        elif isinstance(exc, asyncio.CancelledError):
            self.status = "CANCELLED"
        else:
            self.status = "INTERNAL"

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def usage(self) -> Usage:
        return (self.last.usage if self.last is not None else None) or Usage()

    @property
    def finish_reason(self) -> str:
        """How the response ended ("" when it did not)."""
        if self.last is None:
            return ""
        return types_pb2.FinishReason.Name(self.last.finish_reason)

    @property
    def used_tokens(self) -> int:
        """What the request costs the caller's quota: nothing for a cache hit or a
        failure, else the prompt and completion tokens."""
        if self.cached or self.status != "OK":
            return 0
        return self.usage.prompt_tokens + self.usage.completion_tokens

    @property
    def labels(self) -> dict[str, str]:
        return {"model": self.model or "", "task": self.task or "", "arm": self.arm}

    def audit_line(self, latency_ms: float) -> dict[str, Any]:
        """The request's audit line: only redacted text, summarised."""
        subject = self.principal.subject if self.principal is not None else None
        line: dict[str, Any] = {
            "time": self.at,
            "request_id": self.request_id,
            "subject": subject,
            "model": self.model if self.model is not None else self.requested_model,
            "task": self.task if self.task is not None else self.requested_task,
            "status": self.status,
            "cached": self.cached,
        }
        if self.checked is not None:
            checked = self.checked.content
            line["prompt_summary"] = summary(checked.last_user_text)
            line["redactions"] = list(self.checked.redactions)
            if checked.is_conversation:
                line["turns"] = len(checked.turns)
            if self.checked.flags:
                line["flags"] = list(self.checked.flags)
                line["decided_by"] = self.checked.decided_by
        if self.refused_by:
            line["decided_by"] = self.refused_by
        if self.arm:
            line["arm"] = self.arm
        if self.speculation is not None and self.speculation.outcome:
            line["speculation"] = self.speculation.outcome
        if self.provider:
            line["provider"] = self.provider
        if self.offered_to:
            line["offered_to"] = list(dict.fromkeys(self.offered_to))
        if self.last is not None:
            line["finish_reason"] = self.finish_reason
            line["prompt_tokens"] = self.usage.prompt_tokens
            line["completion_tokens"] = self.usage.completion_tokens
        line["latency_ms"] = latency_ms
        if self.checked is not None:
            # Only text that passed the sanitizer's filter is ever summarised.
            line["response_summary"] = summary("".join(self.text))
        return line
