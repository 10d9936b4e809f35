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

from headrace.services.runtime.output_filter.rules import (
    Action,
    Direction,
    PatternRule,
    Rule,
    TermRule,
)
from headrace.services.runtime.settings import ServiceSettings, config_file
from headrace.services.sanitizer.classifier import (
    ClassifierPolicy,
    InjectionClassifier,
    SignalAction,
    load_model,
)
from headrace.services.sanitizer.guard import DEFAULT_GUARD_PROMPT, GuardPolicy
from headrace.services.sanitizer.policy import PromptPolicy, TierPolicies

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
    injection_classifier: bool | None = None
    injection_classifier_action: SignalAction | None = None
    injection_classifier_threshold: float | None = Field(None, ge=0, le=1)
    injection_classifier_flag_threshold: float | None = Field(None, ge=0, le=1)
    injection_classifier_model: Path | None = None
    guard_model: str | None = None
    guard_action: SignalAction | None = None
    guard_budget_ms: int | None = Field(None, ge=1, le=60_000)
    guard_fail_open: bool | None = None
    guard_prompt: str | None = None
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
    injection_classifier: bool = True
    """With injection_defence: also score prompts with the learned classifier
    (signal `injection.classifier`), after the rules found nothing to block."""
    injection_classifier_action: SignalAction = SignalAction.BLOCK
    """What a score at or over the threshold does: block, flag or allow."""
    injection_classifier_threshold: float | None = Field(None, ge=0, le=1)
    """The score (0..1) that gets the action; unset: the threshold chosen in training."""
    injection_classifier_flag_threshold: float | None = Field(0.5, ge=0, le=1)
    """Scores from here up to the threshold are let through and flagged (the
    response's flags, the audit line); unset: no flag band."""
    injection_classifier_model: Path | None = None
    """A trained artefact to score with instead of the shipped one (e.g. one trained with
    static word vectors, docs/sanitizer.md, sixth round); unset: the shipped model."""
    guard_model: str = ""
    """A model in the inference registry to ask whether a prompt is an injection,
    after the rules and the classifier let it through; empty: no guard (the default)."""
    guard_action: SignalAction = SignalAction.BLOCK
    """What an "unsafe" answer does: block, flag or allow."""
    guard_budget_ms: int = Field(500, ge=1, le=60_000)
    """How long the guard may take; past it the verdict is unknown."""
    guard_fail_open: bool = True
    """Unknown verdict (no answer in time, an error): true lets the prompt through
    flagged injection.guard.unavailable; false refuses it with UNAVAILABLE."""
    guard_prompt: str = DEFAULT_GUARD_PROMPT
    """The guard's input, written as its model card asks; {prompt} is the checked prompt."""
    guard_unsafe_answers: list[str] = ["unsafe", "yes"]
    """First words of the guard's answer that mean an attack."""
    guard_safe_answers: list[str] = ["safe", "no"]
    """First words that mean no attack; any other answer is an unknown verdict."""
    rules: list[RuleSettings] = []
    """Custom rules, highest priority first."""
    disabled_rules: list[str] = []
    """Rule ids, or prefixes up to a dot ("pii", "injection.persona"), to switch off."""
    tier_policies: dict[str, TierPolicySettings] = {}
    """Per-tier differences; a tier not listed (or none) gets the base policy."""
    policy_reload_seconds: float = Field(default=0.5, ge=0.0)
    """How often the running sanitizer looks at headrace.toml and the rules' terms files;
    when one changed it reloads its policies (a configuration that does not load keeps
    the running ones, logged) and routers receive the new output policy within a
    second. 0: never reload."""
    output_policy_heartbeat_seconds: float = Field(default=1.0, gt=0.0)
    """Longest silence on a WatchOutputPolicy stream: a heartbeat tells routers the
    policy they hold is still current."""

    def policy_files(self) -> list[Path]:
        """The files the policies are read from: headrace.toml and every terms file."""
        rules = [*self.rules, *(r for t in self.tier_policies.values() for r in t.rules)]
        return [config_file(), *(r.terms_file for r in rules if r.terms_file is not None)]

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
            classifier=self._classifier(TierPolicySettings()),
            guard=self._guard(TierPolicySettings()),
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
                classifier=self._classifier(tier),
                guard=self._guard(tier),
            )
        return TierPolicies(default, tiers)

    def _guard(self, tier: TierPolicySettings) -> GuardPolicy | None:
        model = _pick(tier.guard_model, self.guard_model)
        if not model:
            return None
        return GuardPolicy(
            model=model,
            action=_pick(tier.guard_action, self.guard_action),
            budget_s=_pick(tier.guard_budget_ms, self.guard_budget_ms) / 1000,
            fail_open=_pick(tier.guard_fail_open, self.guard_fail_open),
            prompt=_pick(tier.guard_prompt, self.guard_prompt),
            unsafe_answers=tuple(self.guard_unsafe_answers),
            safe_answers=tuple(self.guard_safe_answers),
        )

    def _classifier(self, tier: TierPolicySettings) -> ClassifierPolicy | None:
        if not _pick(tier.injection_classifier, self.injection_classifier):
            return None
        # An unset flag threshold in a tier keeps the base's (None there means no band).
        flag = tier.injection_classifier_flag_threshold
        if flag is None and "injection_classifier_flag_threshold" not in tier.model_fields_set:
            flag = self.injection_classifier_flag_threshold
        # A tier's own artefact, else the base's, else the shipped model (None).
        path = _pick(tier.injection_classifier_model, self.injection_classifier_model)
        model: InjectionClassifier | None = None
        if path is not None:
            try:
                model = load_model(path)
            except (OSError, KeyError, ValueError) as exc:
                raise ValueError(
                    f"injection_classifier_model {str(path)!r} "
                    f"cannot be loaded ({type(exc).__name__}: {exc}); point it at an artefact "
                    "that scripts/train_injection_classifier.py wrote, or unset it"
                ) from None
        return ClassifierPolicy(
            model=model,
            action=_pick(tier.injection_classifier_action, self.injection_classifier_action),
            # The base's threshold was chosen for the base's model: a tier with a model
            # of its own keeps its own threshold or that model's trained one.
            threshold=(
                tier.injection_classifier_threshold
                if tier.injection_classifier_model is not None
                else _pick(tier.injection_classifier_threshold, self.injection_classifier_threshold)
            ),
            flag_threshold=flag,
        )


def _pick(value: T | None, default: T) -> T:
    return default if value is None else value
