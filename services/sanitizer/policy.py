"""Prompt checks and output filtering, pure Python (no gRPC here).

The prompt path: normalise (NFKC, drop zero-width and control characters),
enforce size limits, refuse deny terms, redact secrets and PII. The output
path (StreamFilter) holds back only as much text as the longest deny term
needs, so a term split across tokens is still caught.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from headrace.services.runtime.errors import InvalidArgument, PermissionDenied

# Zero-width and bidi-control characters used to hide text from filters.
_INVISIBLE = dict.fromkeys(
    map(
        ord,
        "\u200b\u200c\u200d\u2060\ufeff\u00ad\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
    ),
    None,
)


def normalise(text: str) -> str:
    """NFKC, without zero-width/bidi characters or C0/C1 controls (tab and newline kept)."""
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    return "".join(
        ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf")
    )


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str | None:
    """[CARD] for the longest Luhn-valid run of 13-19 digits that starts the match.

    The pattern is greedy, so a card number followed by another digit group (a
    CVV, an expiry) arrives as one candidate; shorter prefixes that end at a
    separator are tried too, and what follows the card is kept.
    """
    text = match.group(0)
    ends = [m.start() for m in re.finditer(r"[ -]", text)] + [len(text)]
    for end in sorted(set(ends), reverse=True):
        digits = re.sub(r"\D", "", text[:end])
        if 13 <= len(digits) <= 19 and _luhn_ok(digits):
            return "[CARD]" + text[end:]
    return None


@dataclass(frozen=True)
class RedactionRule:
    """A pattern and its placeholder; `check` may veto a match (e.g. Luhn)."""

    rule_id: str
    pattern: re.Pattern[str]
    placeholder: str
    check: Callable[[re.Match[str]], str | None] | None = None


REDACTION_RULES: tuple[RedactionRule, ...] = (
    RedactionRule(
        "secret.private_key",
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S
        ),
        "[PRIVATE_KEY]",
    ),
    RedactionRule(
        "secret.jwt",
        re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
        "[JWT]",
    ),
    RedactionRule("secret.aws_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "[AWS_KEY]"),
    RedactionRule(
        "secret.url_password",
        # The user part may itself hold an '@' (an e-mail address as user name).
        re.compile(r"(?<=://)[^\s:/]+:[^\s@/]+(?=@)"),
        "[CREDENTIALS]",
    ),
    RedactionRule(
        "pii.email",
        re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
        "[EMAIL]",
    ),
    RedactionRule("pii.card", re.compile(r"\b(?:\d[ -]?){12,18}\d\b"), "[CARD]", _card),
)


def redact(text: str, rules: Iterable[RedactionRule] = REDACTION_RULES) -> tuple[str, list[str]]:
    """Text with every match replaced by its placeholder, and the ids of rules that fired."""
    fired: list[str] = []
    for rule in rules:

        def replace(match: re.Match[str], rule: RedactionRule = rule) -> str:
            out = rule.check(match) if rule.check else rule.placeholder
            if out is None:
                return match.group(0)
            fired.append(rule.rule_id)
            return out

        text = rule.pattern.sub(replace, text)
    return text, sorted(set(fired))


@dataclass(frozen=True)
class CheckedPrompt:
    """A prompt that may go on, and the redaction rules that changed it."""

    text: str
    redactions: list[str]


@dataclass
class PromptPolicy:
    """The checks every prompt passes before it reaches a model, cache or log."""

    max_bytes: int
    max_tokens_estimate: int
    deny_terms: list[str] = field(default_factory=list)
    redact: bool = True

    def __post_init__(self) -> None:
        self._deny = [(f"deny.{i}", t.casefold()) for i, t in enumerate(self.deny_terms) if t]

    def check(self, prompt: str) -> CheckedPrompt:
        """Normalise, limit, refuse deny terms, redact; raise a typed error on refusal."""
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
        folded = text.casefold()
        for rule_id, term in self._deny:
            if term in folded:
                raise PermissionDenied(f"prompt blocked by rule {rule_id}")
        if not self.redact:
            return CheckedPrompt(text, [])
        redacted, fired = redact(text)
        return CheckedPrompt(redacted, fired)


@dataclass
class FilterResult:
    """What a StreamFilter releases after one piece of text."""

    text: str
    blocked: bool = False
    rule_id: str = ""


class StreamFilter:
    """Releases generated text as soon as no deny term can still start in it."""

    def __init__(self, deny_terms: Iterable[str]) -> None:
        self._terms = [(f"deny.{i}", t.casefold()) for i, t in enumerate(deny_terms) if t]
        self._hold = max((len(t) for _, t in self._terms), default=1) - 1
        self._pending = ""
        self.blocked = False

    def feed(self, text: str, *, end: bool = False) -> FilterResult:
        """Add text; return what can be released now (everything, when end)."""
        if self.blocked:
            return FilterResult("", True)
        self._pending += text
        folded = self._pending.casefold()
        for rule_id, term in self._terms:
            if term in folded:
                self.blocked = True
                self._pending = ""
                return FilterResult("", True, rule_id)
        keep = 0 if end else min(self._hold, len(self._pending))
        cut = len(self._pending) - keep
        released, self._pending = self._pending[:cut], self._pending[cut:]
        return FilterResult(released)
