"""Output policies as data: the sanitizer's compiled output rules to protobuf and back.

A pattern rule travels as its regexes and bounds; a built-in rule whose matcher
is code (checksums, word edges) names it (`redaction.FINDERS`), so both ends run
the same function. Anything a receiver cannot rebuild exactly raises
`PolicyError`: a router must then refuse output rather than filter with less.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from headrace.sanitizer.v1 import sanitizer_pb2
from headrace.services.runtime.output_filter.redaction import FINDERS
from headrace.services.runtime.output_filter.rules import (
    Action,
    Direction,
    PatternRule,
    Rule,
    RuleSet,
    TermRule,
)

OUTPUT_ONLY = frozenset({Direction.OUTPUT})

_ACTIONS = {
    Action.BLOCK: sanitizer_pb2.OUTPUT_RULE_ACTION_BLOCK,
    Action.REDACT: sanitizer_pb2.OUTPUT_RULE_ACTION_REDACT,
    Action.ALLOW: sanitizer_pb2.OUTPUT_RULE_ACTION_ALLOW,
}
_FROM_ACTION = {v: k for k, v in _ACTIONS.items()}
_FINDER_NAMES = {finder: name for name, finder in FINDERS.items()}


class PolicyError(ValueError):
    """An output policy that cannot be sent or rebuilt exactly."""


def rule_to_proto(rule: Rule) -> sanitizer_pb2.OutputRule:
    """One output rule as data."""
    message = sanitizer_pb2.OutputRule(
        id=rule.id,
        category=rule.category,
        action=_ACTIONS[rule.action],
        placeholder=rule.placeholder,
    )
    if isinstance(rule, TermRule):
        message.terms.terms.extend(rule.terms)
        message.terms.whole_word = rule.whole_word
    elif isinstance(rule, PatternRule):
        pattern = message.pattern
        pattern.regex, pattern.flags = rule.pattern.pattern, rule.pattern.flags
        pattern.max_length = rule.max_length
        pattern.partial, pattern.partial_flags = rule.partial.pattern, rule.partial.flags
        if rule.closing is not None:
            pattern.closing, pattern.closing_flags = rule.closing.pattern, rule.closing.flags
        pattern.needs.extend(rule.needs)
        if rule.finder is not None:
            name = _FINDER_NAMES.get(rule.finder)
            if name is None:
                raise PolicyError(f"rule {rule.id}: its finder has no name in FINDERS")
            pattern.finder = name
    else:
        raise PolicyError(f"rule {rule.id}: a {type(rule).__name__} does not apply to output")
    return message


def _compile(rule_id: str, what: str, regex: str, flags: int) -> re.Pattern[str]:
    try:
        return re.compile(regex, flags)
    except (re.error, ValueError) as exc:
        raise PolicyError(f"rule {rule_id}: its {what} does not compile: {exc}") from None


def rule_from_proto(message: sanitizer_pb2.OutputRule) -> Rule:
    """The rule a message describes (PolicyError when it cannot be rebuilt exactly)."""
    action = _FROM_ACTION.get(message.action)
    if not message.id or action is None:
        raise PolicyError(f"output rule {message.id!r}: an id and a known action are required")
    common = {
        "id": message.id,
        "category": message.category,
        "action": action,
        "directions": OUTPUT_ONLY,
        "placeholder": message.placeholder,
    }
    kind = message.WhichOneof("match")
    if kind == "terms":
        return TermRule(
            **common, terms=tuple(message.terms.terms), whole_word=message.terms.whole_word
        )
    if kind == "pattern":
        p = message.pattern
        finder = None
        if p.finder:
            finder = FINDERS.get(p.finder)
            if finder is None:
                raise PolicyError(
                    f"rule {message.id}: finder {p.finder!r} is unknown to this version"
                )
        if p.max_length < 1:
            raise PolicyError(f"rule {message.id}: max_length must be at least 1")
        return PatternRule(
            **common,
            pattern=_compile(message.id, "regex", p.regex, p.flags),
            max_length=p.max_length,
            partial=_compile(message.id, "partial", p.partial, p.partial_flags),
            closing=_compile(message.id, "closing", p.closing, p.closing_flags)
            if p.closing
            else None,
            needs=tuple(p.needs),
            finder=finder,
        )
    raise PolicyError(f"output rule {message.id}: neither terms nor a pattern")


def policy_to_proto(rules: RuleSet) -> sanitizer_pb2.OutputPolicy:
    """One tier's output rules, highest priority first."""
    if rules.direction is not Direction.OUTPUT:
        raise PolicyError("only output rules travel as an output policy")
    return sanitizer_pb2.OutputPolicy(rules=[rule_to_proto(r) for r in rules.rules])


def policy_set_to_proto(
    default: RuleSet, tiers: Mapping[str, RuleSet]
) -> sanitizer_pb2.OutputPolicySet:
    """Every tier's output rules."""
    message = sanitizer_pb2.OutputPolicySet(default_policy=policy_to_proto(default))
    for name, rules in tiers.items():
        message.tiers[name].CopyFrom(policy_to_proto(rules))
    return message


def version_of(message: sanitizer_pb2.OutputPolicySet | sanitizer_pb2.OutputPolicy) -> str:
    """A digest of the policy set (or of one tier's policy): equal versions mean equal
    rules."""
    return hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()[:16]


def _rules(message: sanitizer_pb2.OutputPolicy) -> RuleSet | None:
    rules = [rule_from_proto(r) for r in message.rules]
    try:
        return RuleSet(rules, Direction.OUTPUT) if rules else None
    except ValueError as exc:
        raise PolicyError(str(exc)) from None


@dataclass(frozen=True)
class OutputPolicies:
    """Every tier's output rules at one version, compiled for matching.

    A tier's rules are None when its policy filters nothing (output may stream as
    generated)."""

    version: str
    default: RuleSet | None
    tiers: Mapping[str, RuleSet | None]
    default_digest: str
    digests: Mapping[str, str]
    """Each tier's own policy digest (beside the default's), so a change to one tier
    leaves the others' equal."""

    def for_tier(self, tier: str) -> RuleSet | None:
        """The tier's rules; the default's for an empty or unknown tier."""
        return self.tiers.get(tier, self.default) if tier else self.default

    def digest_for(self, tier: str) -> str:
        """A digest of the rules `for_tier` gives: equal digests, equal rules."""
        return self.digests.get(tier, self.default_digest) if tier else self.default_digest

    @classmethod
    def from_proto(cls, version: str, message: sanitizer_pb2.OutputPolicySet) -> OutputPolicies:
        """Rebuild and compile a policy set (PolicyError when any rule cannot be)."""
        if not message.HasField("default_policy"):
            raise PolicyError("the output policy set has no default policy")
        return cls(
            version,
            _rules(message.default_policy),
            {name: _rules(policy) for name, policy in message.tiers.items()},
            version_of(message.default_policy),
            {name: version_of(policy) for name, policy in message.tiers.items()},
        )
