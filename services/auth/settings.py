"""Auth service settings (`HEADRACE_*`, `[auth]` in headrace.toml)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field

from headrace.services.runtime.settings import HeadraceSettings, ServiceSettings


class TokenSettings(HeadraceSettings):
    """What a token must say to be accepted; shared by the service and the CLI."""

    section: ClassVar[str] = "auth"

    issuer: str = "headrace"
    audience: str = "headrace"
    leeway_seconds: float = 5.0
    """Clock skew tolerated on exp/nbf/iat."""
    default_ttl_seconds: int = 24 * 3600
    max_ttl_seconds: int = 90 * 24 * 3600


class TierLimits(BaseModel):
    """Limits of one tier; 0 means unlimited."""

    requests_per_minute: int = Field(default=0, ge=0)
    tokens_per_day: int = Field(default=0, ge=0)
    tokens_per_month: int = Field(default=0, ge=0)


DEFAULT_TIERS = {
    "free": TierLimits(requests_per_minute=60, tokens_per_day=200_000, tokens_per_month=2_000_000),
    "pro": TierLimits(
        requests_per_minute=600, tokens_per_day=5_000_000, tokens_per_month=100_000_000
    ),
    "unlimited": TierLimits(),
}


class AuthSettings(ServiceSettings, TokenSettings):
    """Auth service process settings."""

    section: ClassVar[str] = "auth"

    tiers: dict[str, TierLimits] = DEFAULT_TIERS
    """Rate limits and token quotas per tier (HEADRACE_TIERS as JSON)."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Shared by every auth replica (and gateway) so limits hold across them."""
    redis_timeout_seconds: float = 0.2
    key_reload_seconds: float = 1.0
    """How often the key directory and API key file are checked for changes."""
