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

from headrace.services.runtime.errors import InvalidArgument, PermissionDenied, Unavailable
from headrace.services.runtime.output_filter.redaction import REDACTION_RULES, redact
from headrace.services.runtime.output_filter.rules import (
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
from headrace.services.runtime.output_filter.stream import FilterResult, StreamFilter
from headrace.services.runtime.output_filter.text import normalise, warm_up
from headrace.services.sanitizer.classifier import (
    CLASSIFIER_SIGNAL,
    ClassifierPolicy,
    SignalAction,
)
from headrace.services.sanitizer.guard import (
    GUARD_SIGNAL,
    GUARD_UNAVAILABLE,
    GuardPolicy,
    GuardVerdict,
)
from headrace.services.sanitizer.injection import INJECTION_RULES

__all__ = [
    "DENY_TERMS_RULE_ID",
    "REDACTION_RULES",
    "CheckedPrompt",
    "ConversationVerdict",
    "FilterResult",
    "PromptPolicy",
    "PromptVerdict",
    "StreamFilter",
    "TierPolicies",
    "accept",
    "accept_conversation",
    "disabled_by",
    "normalise",
    "redact",
]

DENY_TERMS_RULE_ID = "deny.terms"
DECIDED_BY_TRAILER = "headrace-decided-by"
"""Trailing metadata of a refusal: the id of the rule or signal that blocked."""
BUILTIN_RULES: tuple[Rule, ...] = (*INJECTION_RULES, *REDACTION_RULES)
CLASSIFIER_RULE = Rule(id=CLASSIFIER_SIGNAL, category="injection", action=Action.BLOCK)
"""The classifier as a rule, so a block by it is reported like any rule's."""
GUARD_RULE = Rule(id=GUARD_SIGNAL, category="injection", action=Action.BLOCK)


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
    flags: list[str] = field(default_factory=list)
    """Signals over their flag threshold that let the prompt through (e.g. injection.classifier)."""
    score: float | None = None
    """The classifier's score (0..1), when it ran."""

    @property
    def decided_by(self) -> str:
        """The signal that decided: the blocking rule's id, else the first flag, else ""."""
        if self.blocked is not None:
            return self.blocked.rule.id
        return self.flags[0] if self.flags else ""


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
    classifier: ClassifierPolicy | None = None
    """The learned injection signal (with injection_defence); None: rules only."""
    guard: GuardPolicy | None = None
    """A guard model asked after the rules and the classifier let a prompt through
    (the servicer calls it: it is a network call); None: no guard."""

    def __post_init__(self) -> None:
        known = [r.id for r in (*self.rules, *BUILTIN_RULES)]
        known += [DENY_TERMS_RULE_ID, CLASSIFIER_SIGNAL, GUARD_SIGNAL]
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
        self._classifier = None
        if (
            self.injection_defence
            and self.classifier is not None
            and self.classifier.action is not SignalAction.ALLOW
            and not disabled_by(CLASSIFIER_SIGNAL, self.disabled_rules)
        ):
            self._classifier = (*self.classifier.resolved(), self.classifier.action)
        warm_up()

    def _limit_size(self, size: int, what: str) -> None:
        if size > self.max_bytes:
            raise InvalidArgument(
                f"{what} is {size} bytes; the limit is {self.max_bytes}: shorten it"
            )
        if size // 4 > self.max_tokens_estimate:
            raise InvalidArgument(
                f"{what} is about {size // 4} tokens; the limit is {self.max_tokens_estimate}"
            )

    def _limit(self, prompt: str) -> str:
        text = normalise(prompt)
        if not text.strip():
            raise InvalidArgument("prompt is empty: send some text in GenerateRequest.prompt")
        self._limit_size(len(text.encode()), "prompt")
        return text

    def evaluate(self, prompt: str) -> PromptVerdict:
        """Normalise, limit (InvalidArgument), match every rule; does not raise on a block."""
        return self._match(self._limit(prompt))

    def evaluate_conversation(self, turns: Sequence[str]) -> ConversationVerdict:
        """Every turn of a conversation (assistant turns too: clients write them),
        then the turns joined, so an injection split across turns is caught; the
        limits apply to the whole conversation. Redaction is per turn."""
        if not turns:
            raise InvalidArgument("the conversation is empty: send at least one user turn")
        texts = [normalise(turn) for turn in turns]
        for index, text in enumerate(texts):
            if not text.strip():
                raise InvalidArgument(f"messages[{index}] is empty: give it some text")
        self._limit_size(sum(len(t.encode()) for t in texts), "the conversation")
        verdicts = [self._match(text) for text in texts]
        for index, verdict in enumerate(verdicts):
            if verdict.blocked is not None:
                return ConversationVerdict(verdicts, verdict.blocked, f"messages[{index}]")
        whole = None
        if len(texts) > 1:
            whole = self._match("\n".join(texts), redact=False)
            if whole.blocked is not None:
                return ConversationVerdict(verdicts, whole.blocked, "the conversation as a whole")
        return ConversationVerdict(verdicts, None, "", whole)

    def _match(self, text: str, redact: bool = True) -> PromptVerdict:
        """Match every rule on normalised, limited text; redact=False leaves the text
        as it is (the joined conversation: each turn is redacted on its own)."""
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

        # The rules found nothing to block: the learned signal reads the same text.
        flags: list[str] = []
        score = None
        if self._classifier is not None:
            model, threshold, flag_threshold, action = self._classifier
            score = model.score(text)
            if score >= threshold and action is SignalAction.BLOCK:
                hit = Hit(CLASSIFIER_RULE, 0, 0)
                return PromptVerdict(text, [], hit, [hit], score=score)
            if score >= flag_threshold:
                flags.append(CLASSIFIER_SIGNAL)

        if not redact:
            return PromptVerdict(text, [], None, list(dict.fromkeys(used_allows)), flags, score)
        taken = resolve_overlaps(
            (h for h in acting if h.rule.action is Action.REDACT), rules.priority
        )
        return PromptVerdict(
            apply_redactions(text, taken),
            sorted({h.rule.id for h in taken}),
            None,
            taken + list(dict.fromkeys(used_allows)),
            flags,
            score,
        )

    def check(self, prompt: str) -> CheckedPrompt:
        """Normalise, limit, refuse blocked prompts, redact; raise a typed error on refusal."""
        return accept(self.evaluate(prompt))

    def stream_filter(self) -> StreamFilter:
        """A filter for one response stream under this policy's output rules."""
        return StreamFilter(self.output_rules)


@dataclass(frozen=True)
class ConversationVerdict:
    """What the checks found in each turn of a conversation, and in all of it."""

    turns: list[PromptVerdict]
    """One verdict per turn, in order (texts normalised and redacted)."""
    blocked: Hit | None
    """The blocking match, in one turn or across turns."""
    where: str
    """Where the block was found: `messages[i]`, or the conversation as a whole."""
    whole: PromptVerdict | None = None
    """The verdict on the turns joined, when there are several and none was blocked."""

    @property
    def flags(self) -> list[str]:
        """Signals that flagged any turn or the whole conversation, each once."""
        verdicts = [*self.turns, *([self.whole] if self.whole is not None else [])]
        return list(dict.fromkeys(flag for verdict in verdicts for flag in verdict.flags))

    @property
    def score(self) -> float | None:
        """The classifier's highest score over the turns and the whole, when it ran."""
        verdicts = [*self.turns, *([self.whole] if self.whole is not None else [])]
        scores = [v.score for v in verdicts if v.score is not None]
        return max(scores) if scores else None

    @property
    def decided_by(self) -> str:
        """The blocking rule or signal, else the first flag, else ""."""
        if self.blocked is not None:
            return self.blocked.rule.id
        flags = self.flags
        return flags[0] if flags else ""

    @property
    def hits(self) -> list[Hit]:
        """Every match that acted, in every turn (the block once)."""
        found = [hit for verdict in self.turns for hit in verdict.hits]
        if self.blocked is not None and self.blocked not in found:
            found.append(self.blocked)
        return found

    @property
    def redactions(self) -> list[str]:
        """Ids of the rules that changed any turn, sorted."""
        return sorted({rule for verdict in self.turns for rule in verdict.redactions})


def refusal(hit: Hit, where: str = "") -> PermissionDenied:
    """The error for a blocked prompt: it names the rule and where, never the text."""
    place = f" in {where}" if where else ""
    return PermissionDenied(
        f"prompt blocked by rule {hit.label} (category {hit.rule.category}){place}: "
        "remove or rephrase that part of the prompt",
        # The router writes this in the audit line without parsing the message.
        trailers={DECIDED_BY_TRAILER: hit.rule.id},
    )


def accept(verdict: PromptVerdict) -> CheckedPrompt:
    """The prompt that may go on, or PermissionDenied naming the rule (never the text)."""
    if verdict.blocked is not None:
        raise refusal(verdict.blocked)
    return CheckedPrompt(verdict.text, verdict.redactions)


def accept_conversation(verdict: ConversationVerdict) -> list[CheckedPrompt]:
    """Each turn as it may go on, or PermissionDenied naming the rule and the turn."""
    if verdict.blocked is not None:
        raise refusal(verdict.blocked, verdict.where)
    return [CheckedPrompt(turn.text, turn.redactions) for turn in verdict.turns]


def after_guard(guard: GuardPolicy, verdict: GuardVerdict) -> list[str]:
    """The flags a guard's verdict adds to a prompt the other checks let through;
    raises PermissionDenied (an unsafe verdict in a blocking tier) or Unavailable
    (no verdict in a fail-closed tier)."""
    if verdict is GuardVerdict.UNSAFE:
        if guard.action is SignalAction.BLOCK:
            raise refusal(Hit(GUARD_RULE, 0, 0))
        return [GUARD_SIGNAL] if guard.action is SignalAction.FLAG else []
    if verdict is GuardVerdict.UNKNOWN:
        if not guard.fail_open:
            raise Unavailable(
                f"the guard model {guard.model} gave no verdict within "
                f"{guard.budget_s * 1000:.0f} ms and this tier fails closed; retry the request",
                trailers={DECIDED_BY_TRAILER: GUARD_UNAVAILABLE},
            )
        return [GUARD_UNAVAILABLE]
    return []


class TierPolicies:
    """One PromptPolicy per quota tier, and the default for any other tier."""

    def __init__(self, default: PromptPolicy, tiers: Mapping[str, PromptPolicy] | None = None):
        self.default = default
        self.tiers = dict(tiers or {})

    def for_tier(self, tier: str) -> PromptPolicy:
        """The policy of this tier; the default for an empty or unknown tier."""
        return self.tiers.get(tier, self.default)
