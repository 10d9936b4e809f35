"""Sanitizer settings (`HEADRACE_*`, `[sanitizer]` in headrace.toml)."""

from __future__ import annotations

from typing import ClassVar

from headrace.services.runtime.settings import ServiceSettings


class SanitizerSettings(ServiceSettings):
    """Limits and lists applied to every prompt and response."""

    section: ClassVar[str] = "sanitizer"

    max_prompt_bytes: int = 32 * 1024
    """Prompts larger than this (UTF-8, after normalisation) are refused."""
    max_prompt_tokens_estimate: int = 8192
    """Refuse prompts whose estimated token count (bytes / 4) exceeds this."""
    deny_terms: list[str] = []
    """Terms that block a prompt (PERMISSION_DENIED) or end a response (CONTENT_FILTER)."""
    redact: bool = True
    """Replace secrets and PII with typed placeholders such as [EMAIL]."""
