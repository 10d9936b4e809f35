"""Prompt checks and output filtering, pure Python (no gRPC here).

The prompt path: normalise (NFKC, drop zero-width and control characters),
enforce size limits, match every rule (deny terms in one Aho-Corasick pass,
regex rules, the prompt-injection rules on the text's skeleton), refuse on a
blocking rule, redact secrets and PII. The output path (StreamFilter, in
stream.py) applies the output rules to generated text piece by piece.

A PromptPolicy is one tier's policy; TierPolicies picks one by tier name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from headrace.services.runtime.errors import InvalidArgument, PermissionDenied
from headrace.services.sanitizer.injection import INJECTION_RULES
from headrace.services.sanitizer.redaction import REDACTION_RULES, redact
from headrace.services.sanitizer.rules import (
    Action,
    Direction,
    Hit,
    Rule,
    RuleSet,
    TermRule,
    TextView,
    apply_redactions,
    contained,
    resolve_overlaps,
)
from headrace.services.sanitizer.stream import FilterResult, StreamFilter
from headrace.services.sanitizer.text import normalise, warm_up

__all__ = [
    "DENY_TERMS_RULE_ID",
    "REDACTION_RULES",
    "CheckedPrompt",
    "FilterResult",
    "PromptPolicy",
    "PromptVerdict",
    "StreamFilter",
    "TierPolicies",
    "accept",
    "disabled_by",
    "normalise",
    "redact",
]

DENY_TERMS_RULE_ID = "deny.terms"
BUILTIN_RULES: tuple[Rule, ...] = (*INJECTION_RULES, *REDACTION_RULES)


def disabled_by(rule_id: str, entries: Iterable[str]) -> bool:
    """Whether an entry of disabled_rules names this rule: its id, or a prefix
    of it up to a dot ("injection" and "injection." both disable injection.*)."""
    return any(
        rule_id == e or rule_id.startswith(e if e.endswith(".") else e + ".") for e in entries
    )


@dataclass(frozen=True)
class CheckedPrompt:
    """A prompt that may go on, and the redaction rules that changed it."""

    text: str
    redactions: list[str]


@dataclass(frozen=True)
class PromptVerdict:
    """Everything the checks found in one prompt."""

    text: str
    """The normalised prompt with redactions applied."""
    redactions: list[str]
    """Ids of the rules that changed the text, sorted."""
    blocked: Hit | None
    """The blocking match, if any (for a skeleton match the span is empty)."""
    hits: list[Hit] = field(default_factory=list)
    """The matches that acted: the block, each redaction, each allow that exempted something."""


@dataclass
class PromptPolicy:
    """The checks every prompt passes before it reaches a model, cache or log.

    rules: custom rules, highest priority first; deny_terms: a shorthand for
    one block rule `deny.terms` over these terms; injection_defence and redact
    switch the built-in injection and redaction rules on; disabled_rules turns
    individual rules (or id prefixes) off.
    """

    max_bytes: int
    max_tokens_estimate: int
    deny_terms: Sequence[str] = ()
    redact: bool = True
    rules: Sequence[Rule] = ()
    injection_defence: bool = True
    disabled_rules: Sequence[str] = ()

    def __post_init__(self) -> None:
        known = [r.id for r in (*self.rules, *BUILTIN_RULES)] + [DENY_TERMS_RULE_ID]
        unknown = [e for e in self.disabled_rules if not any(disabled_by(k, [e]) for k in known)]
        if unknown:
            raise ValueError(f"disabled_rules names no rule: {', '.join(unknown)}")
        active: list[Rule] = list(self.rules)
        terms = tuple(t for t in self.deny_terms if t.strip())
        if terms:
            active.append(
                TermRule(id=DENY_TERMS_RULE_ID, category="deny", action=Action.BLOCK, terms=terms)
            )
        if self.injection_defence:
            active.extend(INJECTION_RULES)
        if self.redact:
            active.extend(REDACTION_RULES)
        self.active_rules = [r for r in active if not disabled_by(r.id, self.disabled_rules)]
        self.prompt_rules = RuleSet(self.active_rules, Direction.PROMPT)
        self.output_rules = RuleSet(self.active_rules, Direction.OUTPUT)
        self.filters_output = bool(self.output_rules.rules)
        """Whether any rule acts on output; without one, responses need no FilterStream."""
        warm_up()

    def _limit(self, prompt: str) -> str:
        text = normalise(prompt)
        if not text.strip():
            raise InvalidArgument("prompt is empty: send some text in GenerateRequest.prompt")
        size = len(text.encode())
        if size > self.max_bytes:
            raise InvalidArgument(
                f"prompt is {size} bytes; the limit is {self.max_bytes}: shorten it"
            )
        if size // 4 > self.max_tokens_estimate:
            raise InvalidArgument(
                f"prompt is about {size // 4} tokens; the limit is {self.max_tokens_estimate}"
            )
        return text

    def evaluate(self, prompt: str) -> PromptVerdict:
        """Normalise, limit (InvalidArgument), match every rule; does not raise on a block."""
        text = self._limit(prompt)
        rules = self.prompt_rules
        view = TextView.of_normalised(text)
        hits = rules.text_hits(view)
        allowed = [h for h in hits if h.rule.action is Action.ALLOW]
        acting = [h for h in hits if h.rule.action is not Action.ALLOW]
        exempt = [h for h in acting if allowed and contained(h, allowed)]
        acting = [h for h in acting if not (allowed and contained(h, allowed))]
        used_allows = [a for a in allowed if any(contained(h, [a]) for h in exempt)]

        blocks = sorted((h for h in acting if h.rule.action is Action.BLOCK), key=lambda h: h.start)
        if not blocks and rules.skeleton_automata:
            # Skeleton matches are placed in the text only when an allow rule
            # could exempt them; placing them is pure Python and slower.
            found = rules.skeleton_hits(view, spans=bool(allowed))
            for hit in found:
                if allowed and contained(hit, allowed):
                    used_allows.extend(a for a in allowed if contained(hit, [a]))
                elif hit.rule.action is Action.BLOCK:
                    blocks.append(hit)
        if blocks:
            return PromptVerdict(text, [], blocks[0], [blocks[0]])

        taken = resolve_overlaps(
            (h for h in acting if h.rule.action is Action.REDACT), rules.priority
        )
        return PromptVerdict(
            apply_redactions(text, taken),
            sorted({h.rule.id for h in taken}),
            None,
            taken + list(dict.fromkeys(used_allows)),
        )

    def check(self, prompt: str) -> CheckedPrompt:
        """Normalise, limit, refuse blocked prompts, redact; raise a typed error on refusal."""
        return accept(self.evaluate(prompt))

    def stream_filter(self) -> StreamFilter:
        """A filter for one response stream under this policy's output rules."""
        return StreamFilter(self.output_rules)


def accept(verdict: PromptVerdict) -> CheckedPrompt:
    """The prompt that may go on, or PermissionDenied naming the rule (never the text)."""
    if verdict.blocked is not None:
        hit = verdict.blocked
        raise PermissionDenied(
            f"prompt blocked by rule {hit.label} (category {hit.rule.category}): "
            "remove or rephrase that part of the prompt"
        )
    return CheckedPrompt(verdict.text, verdict.redactions)


class TierPolicies:
    """One PromptPolicy per quota tier, and the default for any other tier."""

    def __init__(self, default: PromptPolicy, tiers: Mapping[str, PromptPolicy] | None = None):
        self.default = default
        self.tiers = dict(tiers or {})

    def for_tier(self, tier: str) -> PromptPolicy:
        """The policy of this tier; the default for an empty or unknown tier."""
        return self.tiers.get(tier, self.default)
