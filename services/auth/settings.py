"""Auth service settings (`HEADRACE_*`, `[auth]` in headrace.toml)."""

from __future__ import annotations

from typing import ClassVar

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


class AuthSettings(ServiceSettings, TokenSettings):
    """Auth service process settings."""

    section: ClassVar[str] = "auth"
