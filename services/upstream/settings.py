"""Upstream settings (`HEADRACE_*`, `[upstream]` in headrace.toml): the hosted models
and the free allowance of each (docs/upstreams.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field, field_validator, model_validator

from headrace.services.runtime.settings import ServiceSettings


class Allowance(BaseModel):
    """A provider's free allowance for one model: any subset of the limits, none = unlimited.
    Days and months are calendar periods in `timezone` (UTC unless configured)."""

    requests_per_minute: int | None = Field(default=None, ge=0)
    requests_per_day: int | None = Field(default=None, ge=0)
    tokens_per_day: int | None = Field(default=None, ge=0)
    tokens_per_month: int | None = Field(default=None, ge=0)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        ZoneInfo(value)  # raises for an unknown zone
        return value


class HostedModel(BaseModel):
    """One model of a hosted provider, as requests name it."""

    name: str = Field(min_length=1)
    """The name requests (and model groups) use."""
    kind: Literal["openai"] = "openai"
    """`openai`: any OpenAI-compatible endpoint (always /v1/chat/completions)."""
    base_url: str
    """The API's base, e.g. https://api.groq.com/openai/v1 (…/chat/completions is added)."""
    model: str = ""
    """The provider's name for the model; default: `name`."""
    provider: str = ""
    """Who receives the prompts (audit lines, metrics, responses); default: base_url's host."""
    api_key_env: str = ""
    """Environment variable holding the API key (read by the upstream service only)."""
    api_key_file: Path | None = None
    """Or a file holding it (first line)."""
    aliases: list[str] = []
    context_size: int = Field(default=8192, ge=1)
    supports_json_schema: bool = False
    """Whether the provider honours response_format json_schema."""
    supports_grammar: bool = False
    """Whether it honours a raw GBNF grammar (OpenAI-compatible APIs rarely do)."""
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    first_token_timeout_seconds: float = Field(default=30.0, gt=0)
    """Until the response headers and the first chunk; past it the router moves on."""
    read_timeout_seconds: float = Field(default=30.0, gt=0)
    """Longest silence between two chunks once streaming."""
    http2: bool = True
    """Offer HTTP/2 (used when the provider's TLS offers it)."""
    ca_file: Path | None = None
    """A CA bundle to trust for this provider (a self-hosted server with a private CA);
    default: the system's."""
    max_connections: int = Field(default=32, ge=1)
    allowance: Allowance = Allowance()
    cooldown_seconds: float = Field(default=60.0, ge=0)
    """Back-off after a 429 that names no retry-after."""

    @model_validator(mode="after")
    def _defaults(self) -> HostedModel:
        if not self.model:
            self.model = self.name
        if not self.provider:
            self.provider = urlsplit(self.base_url).hostname or self.base_url
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"{self.name}: base_url must start with http:// or https://")
        return self

    def api_key(self) -> str:
        """The key, from the environment variable or the file ("" when neither is set)."""
        if self.api_key_env:
            return os.environ.get(self.api_key_env, "").strip()
        if self.api_key_file is not None:
            lines = self.api_key_file.read_text().splitlines()
            return lines[0].strip() if lines else ""
        return ""


class UpstreamSettings(ServiceSettings):
    """The upstream service: hosted models and where their allowances are counted."""

    section: ClassVar[str] = "upstream"

    hosted_models: list[HostedModel] = []
    """HEADRACE_HOSTED_MODELS as JSON, or [[upstream.hosted_models]] tables."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Allowances and 429 cool-downs are shared here; in-process when Redis is absent."""
    allowance_prefix: str = "headrace:upstream"
    """Redis key prefix of the allowance counters."""
    max_tokens_limit: int = Field(default=4096, ge=1)

    @model_validator(mode="after")
    def _unique(self) -> UpstreamSettings:
        seen: set[str] = set()
        for model in self.hosted_models:
            for name in (model.name, *model.aliases):
                if name in seen:
                    raise ValueError(f"hosted model name {name!r} is used twice")
                seen.add(name)
        return self
