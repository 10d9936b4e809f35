"""Output policies as data: a policy rebuilt from its protobuf filters exactly as the
sanitizer's own (every built-in rule, custom terms and patterns, however the text is
split), and anything a receiver cannot rebuild exactly is refused, never weakened."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace.sanitizer.v1 import sanitizer_pb2
from headrace.services.runtime.output_filter.rules import Action, PatternRule, RuleSet, TermRule
from headrace.services.runtime.output_filter.stream import StreamFilter
from headrace.services.runtime.output_filter.wire import (
    OutputPolicies,
    PolicyError,
    policy_set_to_proto,
    rule_to_proto,
    version_of,
)
from headrace.services.sanitizer.policy import PromptPolicy
from headrace.services.sanitizer.settings import RuleSettings

CUSTOM = [
    RuleSettings(
        id="corp.codename", action=Action.REDACT, terms=["Blue Heron"], placeholder="[X]"
    ).to_rule(),
    RuleSettings(
        id="corp.ticket", action=Action.REDACT, pattern=r"TCK-\d{4}", chars="[A-Z0-9-]"
    ).to_rule(),
    RuleSettings(id="corp.ok", action=Action.ALLOW, terms=["test@example.com"]).to_rule(),
    RuleSettings(id="corp.word", action=Action.BLOCK, terms=["dog"], whole_word=True).to_rule(),
]
POLICY = PromptPolicy(
    max_bytes=4096, max_tokens_estimate=4096, deny_terms=["nightingale-7"], rules=CUSTOM
)
TEXTS = [
    "mail bob@example.com or test@example.com, card 4111 1111 1111 1111.",
    "key AKIAIOSFODNN7EXAMPLE and jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abc_DEF-123 ok",
    "Blue Heron met TCK-1234 at https://user:pa55@host.example/ by +44 20 7946 0958",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJB\n-----END RSA PRIVATE KEY----- after",
    "IBAN DE89 3704 0044 0532 0130 00 hotdog then dog. and nightingale-7 at the end",
]


def rebuilt() -> OutputPolicies:
    message = policy_set_to_proto(POLICY.output_rules, {"strict": POLICY.output_rules})
    wire = sanitizer_pb2.OutputPolicySet.FromString(message.SerializeToString())
    return OutputPolicies.from_proto(version_of(wire), wire)


def run(rules: RuleSet, pieces: list[str]) -> tuple[str, bool]:
    stream = StreamFilter(rules)
    out: list[str] = []
    for i, piece in enumerate(pieces):
        result = stream.feed(piece, end=i == len(pieces) - 1)
        out.append(result.text)
        if result.blocked:
            return "".join(out), True
    return "".join(out), False


def test_every_output_rule_of_the_policy_travels() -> None:
    policies = rebuilt()
    assert policies.default is not None
    assert [r.id for r in policies.default.rules] == [r.id for r in POLICY.output_rules.rules]
    assert policies.for_tier("strict") is not None
    assert policies.for_tier("no-such-tier") is policies.default


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(TEXTS), st.lists(st.integers(1, 12), min_size=1, max_size=40))
def test_a_rebuilt_policy_filters_exactly_like_the_sanitizers(text: str, sizes: list[int]) -> None:
    pieces, pos = [], 0
    for size in sizes:
        pieces.append(text[pos : pos + size])
        pos += size
    pieces.append(text[pos:])
    default = rebuilt().default
    assert default is not None
    assert run(default, pieces) == run(POLICY.output_rules, pieces)


def test_the_built_in_checksums_travel_by_name() -> None:
    # 4111 1111 1111 1112 fails the Luhn check: the rebuilt rule must know that too.
    default = rebuilt().default
    assert default is not None
    assert run(default, ["card 4111 1111 1111 1112 ", "x"]) == ("card 4111 1111 1111 1112 x", False)
    assert run(default, ["card 4111 1111 1111 1111 ", "x"]) == ("card [CARD] x", False)


def test_the_version_changes_with_the_rules_and_only_with_them() -> None:
    one = policy_set_to_proto(POLICY.output_rules, {})
    same = policy_set_to_proto(
        PromptPolicy(
            max_bytes=99, max_tokens_estimate=99, deny_terms=["nightingale-7"], rules=CUSTOM
        ).output_rules,
        {},
    )
    other = policy_set_to_proto(
        PromptPolicy(max_bytes=4096, max_tokens_estimate=4096, deny_terms=["x"]).output_rules, {}
    )
    assert version_of(one) == version_of(same) != version_of(other)


def test_each_tier_has_a_digest_of_its_own_rules_that_the_cache_key_carries() -> None:
    bare = PromptPolicy(max_bytes=10, max_tokens_estimate=10, redact=False).output_rules
    both = policy_set_to_proto(POLICY.output_rules, {"trusted": bare, "copy": POLICY.output_rules})
    policies = OutputPolicies.from_proto(version_of(both), both)

    assert policies.digest_for("copy") == policies.digest_for("") == policies.digest_for("nope")
    assert policies.digest_for("trusted") not in ("", policies.digest_for(""))
    # A change to one tier leaves the other tiers' digests (and cache entries) as they were.
    changed = policy_set_to_proto(POLICY.output_rules, {"trusted": POLICY.output_rules})
    after = OutputPolicies.from_proto(version_of(changed), changed)
    assert after.digest_for("") == policies.digest_for("")
    assert after.digest_for("trusted") == policies.digest_for("")


def test_a_policy_without_output_rules_filters_nothing() -> None:
    bare = PromptPolicy(max_bytes=10, max_tokens_estimate=10, redact=False)
    message = policy_set_to_proto(bare.output_rules, {})
    assert OutputPolicies.from_proto("v", message).for_tier("") is None


def test_an_unknown_finder_is_refused_not_dropped() -> None:
    message = policy_set_to_proto(POLICY.output_rules, {})
    message.default_policy.rules[-1].pattern.finder = "from-a-newer-sanitizer"
    with pytest.raises(PolicyError, match="unknown to this version"):
        OutputPolicies.from_proto("v", message)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: setattr(r, "action", sanitizer_pb2.OUTPUT_RULE_ACTION_UNSPECIFIED),
        lambda r: setattr(r.pattern, "regex", "(unclosed"),
        lambda r: r.ClearField("match"),
    ],
)
def test_a_rule_that_cannot_be_rebuilt_exactly_is_refused(change: object) -> None:
    message = policy_set_to_proto(POLICY.output_rules, {})
    rule = next(r for r in message.default_policy.rules if r.WhichOneof("match") == "pattern")
    change(rule)  # type: ignore[operator]
    with pytest.raises(PolicyError):
        OutputPolicies.from_proto("v", message)


def test_a_finder_without_a_name_cannot_be_sent() -> None:
    rule = PatternRule(
        id="x",
        category="c",
        action=Action.REDACT,
        pattern=re.compile("a"),
        max_length=1,
        partial=re.compile("a\\Z"),
        finder=lambda text: [],
    )
    with pytest.raises(PolicyError, match="no name"):
        rule_to_proto(rule)
    assert rule_to_proto(TermRule(id="t", category="c", action=Action.BLOCK, terms=("a",)))
