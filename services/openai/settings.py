"""OpenAI front door settings (`HEADRACE_*`, `[openai]` in headrace.toml)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from headrace.services.runtime.settings import ServiceSettings


class OpenAISettings(ServiceSettings):
    """The HTTP service's knobs; the launcher sets port and metrics_port."""

    section: ClassVar[str] = "openai"

    request_timeout_seconds: float = Field(default=600.0, gt=0)
    """Deadline of one request through the router (a shorter `x-stainless-timeout`, which
    the OpenAI SDKs send, wins); past it the client gets 504."""
    model_aliases: dict[str, str] = {}
    """Other names for served models, known to this front door only, e.g.
    {"gpt-4o-mini": "gemma-3-270m"}. Prefer the registry's `aliases` ([[inference.models]]),
    which gRPC clients can use too; both are listed by GET /v1/models."""
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """Larger request bodies get 413."""
    owned_by: str = "headrace"
    """The `owned_by` of every model in GET /v1/models."""
