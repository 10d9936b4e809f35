"""Sanitizer settings (`HEADRACE_*`, `[sanitizer]` in headrace.toml), and the
policies they describe.

    [sanitizer]
    deny_terms = ["exfiltrate"]
    disabled_rules = ["pii.phone"]

    [[sanitizer.rules]]
    id = "corp.codenames"
    category = "confidential"
    action = "redact"
    terms_file = "codenames.txt"
    placeholder = "[CODENAME]"

    [sanitizer.tier_policies.free]
    max_prompt_bytes = 8192
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from headrace.services.runtime.settings import ServiceSettings
from headrace.services.sanitizer.policy import PromptPolicy, TierPolicies
from headrace.services.sanitizer.rules import Action, Direction, PatternRule, Rule, TermRule

T = TypeVar("T")
_RULE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")


class RuleSettings(BaseModel):
    """One custom rule: terms (a list, a file, or both) or a regex pattern."""

    model_config = ConfigDict(extra="forbid")

    id: str
    """Unique; named in errors, FilterStream's rule_id and metrics (never the matched text)."""
    category: str = "custom"
    action: Action = Action.BLOCK
    """block, redact or allow (exempts what it matches from every other rule)."""
    terms: list[str] = []
    """Literal terms, case-insensitive, matched anywhere (see whole_word)."""
    terms_file: Path | None = None
    """A file of terms, one per line; blank lines and lines starting with # are skipped."""
    pattern: str | None = None
    """A Python regex over the normalised text (case kept; use (?i) to ignore case)."""
    placeholder: str = "[REDACTED]"
    """What a redact rule puts in place of a match."""
    max_length: int = Field(128, ge=1, le=65536)
    """Patterns: the longest match; output is held back at most this long for the rule."""
    chars: str | None = None
    """Patterns: a character class of every character a match can contain, e.g.
    "[A-Za-z0-9_-]"; the output filter then holds back only a trailing run of
    these characters instead of max_length characters."""
    whole_word: bool = False
    """Terms: match only between non-alphanumeric characters."""
    obfuscated: bool = False
    """Terms of a block rule: in prompts, also match through spacing, leetspeak and look-alike letters."""
    directions: list[Direction] = [Direction.PROMPT, Direction.OUTPUT]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if not _RULE_ID.fullmatch(self.id):
            raise ValueError(f"rule id {self.id!r}: use letters, digits and . _ : -")
        has_terms = bool(self.terms) or self.terms_file is not None
        if has_terms == (self.pattern is not None):
            raise ValueError(f"rule {self.id}: give terms/terms_file or a pattern, not both")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"rule {self.id}: pattern does not compile: {exc}") from None
        if self.chars is not None:
            try:
                re.compile(self.chars)
            except re.error as exc:
                raise ValueError(f"rule {self.id}: chars does not compile: {exc}") from None
        if self.obfuscated and (self.pattern is not None or self.action is not Action.BLOCK):
            raise ValueError(f"rule {self.id}: obfuscated applies to terms of a block rule")
        if not self.directions:
            raise ValueError(f"rule {self.id}: directions must name prompt, output or both")
        return self

    def to_rule(self) -> Rule:
        """The domain rule (reads terms_file)."""
        common = {
            "id": self.id,
            "category": self.category,
            "action": self.action,
            "directions": frozenset(self.directions),
            "placeholder": self.placeholder,
        }
        if self.pattern is None:
            terms = list(self.terms)
            if self.terms_file is not None:
                lines = self.terms_file.read_text(encoding="utf-8").splitlines()
                terms += [t.strip() for t in lines if t.strip() and not t.lstrip().startswith("#")]
            return TermRule(
                **common,
                terms=tuple(terms),
                whole_word=self.whole_word,
                obfuscated=self.obfuscated,
            )
        if self.chars is not None:
            partial = f"(?:{self.chars}){{1,{self.max_length}}}\\Z"
        else:
            partial = f"(?s:.{{1,{self.max_length}}})\\Z"
        return PatternRule(
            **common,
            pattern=re.compile(self.pattern),
            max_length=self.max_length,
            partial=re.compile(partial),
        )


class TierPolicySettings(BaseModel):
    """How one tier's policy differs from the base: values set here replace the
    base's, lists are added to the base's (its rules rank above the base rules)."""

    model_config = ConfigDict(extra="forbid")

    max_prompt_bytes: int | None = None
    max_prompt_tokens_estimate: int | None = None
    redact: bool | None = None
    injection_defence: bool | None = None
    deny_terms: list[str] = []
    rules: list[RuleSettings] = []
    disabled_rules: list[str] = []


class SanitizerSettings(ServiceSettings):
    """Limits and rules applied to every prompt and response."""

    section: ClassVar[str] = "sanitizer"

    max_prompt_bytes: int = 32 * 1024
    """Prompts larger than this (UTF-8, after normalisation) are refused."""
    max_prompt_tokens_estimate: int = 8192
    """Refuse prompts whose estimated token count (bytes / 4) exceeds this."""
    deny_terms: list[str] = []
    """Terms that block a prompt (PERMISSION_DENIED) or end a response (CONTENT_FILTER);
    the rule `deny.terms`."""
    redact: bool = True
    """Replace secrets and PII with typed placeholders such as [EMAIL]."""
    injection_defence: bool = True
    """Refuse prompts that match the built-in prompt-injection rules (injection.*)."""
    rules: list[RuleSettings] = []
    """Custom rules, highest priority first."""
    disabled_rules: list[str] = []
    """Rule ids, or prefixes up to a dot ("pii", "injection.persona"), to switch off."""
    tier_policies: dict[str, TierPolicySettings] = {}
    """Per-tier differences; a tier not listed (or none) gets the base policy."""

    def policies(self) -> TierPolicies:
        """The base policy and one per configured tier (raises ValueError on a bad rule)."""
        base_rules = [r.to_rule() for r in self.rules]
        default = PromptPolicy(
            max_bytes=self.max_prompt_bytes,
            max_tokens_estimate=self.max_prompt_tokens_estimate,
            deny_terms=self.deny_terms,
            redact=self.redact,
            rules=base_rules,
            injection_defence=self.injection_defence,
            disabled_rules=self.disabled_rules,
        )
        tiers: dict[str, PromptPolicy] = {}
        for name, tier in self.tier_policies.items():
            tiers[name] = PromptPolicy(
                max_bytes=_pick(tier.max_prompt_bytes, self.max_prompt_bytes),
                max_tokens_estimate=_pick(
                    tier.max_prompt_tokens_estimate, self.max_prompt_tokens_estimate
                ),
                deny_terms=[*self.deny_terms, *tier.deny_terms],
                redact=_pick(tier.redact, self.redact),
                rules=[*(r.to_rule() for r in tier.rules), *base_rules],
                injection_defence=_pick(tier.injection_defence, self.injection_defence),
                disabled_rules=[*self.disabled_rules, *tier.disabled_rules],
            )
        return TierPolicies(default, tiers)


def _pick(value: T | None, default: T) -> T:
    return default if value is None else value
