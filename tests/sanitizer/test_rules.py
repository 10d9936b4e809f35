"""Custom rules: terms and patterns, block / redact / allow, whole words, priorities,
tiers, in prompts and in the output stream."""

from __future__ import annotations

import re

import pytest

from headrace.services.runtime.errors import InvalidArgument, PermissionDenied
from headrace.services.runtime.output_filter.rules import (
    Action,
    Direction,
    PatternRule,
    Rule,
    RuleSet,
    TermRule,
)
from headrace.services.sanitizer.policy import PromptPolicy, StreamFilter, TierPolicies


def _policy(*rules: Rule, **overrides: object) -> PromptPolicy:
    options: dict[str, object] = {"max_bytes": 4096, "max_tokens_estimate": 4096, "rules": rules}
    options.update(overrides)
    return PromptPolicy(**options)  # type: ignore[arg-type]


def _terms(rule_id: str, action: Action, *terms: str, **kw: object) -> TermRule:
    return TermRule(id=rule_id, category="test", action=action, terms=terms, **kw)  # type: ignore[arg-type]


def _pattern(rule_id: str, action: Action, pattern: str, **kw: object) -> PatternRule:
    max_length = int(kw.pop("max_length", 64))  # type: ignore[call-overload]
    chars = kw.pop("chars", None)
    partial = f"(?:{chars}){{1,{max_length}}}\\Z" if chars else f"(?s:.{{1,{max_length}}})\\Z"
    return PatternRule(
        id=rule_id,
        category="test",
        action=action,
        pattern=re.compile(pattern),
        max_length=max_length,
        partial=re.compile(partial),
        **kw,  # type: ignore[arg-type]
    )


def _stream_all(stream: StreamFilter, text: str, size: int = 3) -> tuple[str, bool, str]:
    out, blocked, rule = [], False, ""
    pieces = [text[i : i + size] for i in range(0, len(text), size)] or [""]
    for i, piece in enumerate(pieces):
        result = stream.feed(piece, end=i == len(pieces) - 1)
        out.append(result.text)
        if result.blocked:
            return "".join(out), True, result.rule_id
    return "".join(out), blocked, rule


# --- term rules ---------------------------------------------------------------------


def test_a_block_term_rule_names_its_id_category_and_term_number() -> None:
    policy = _policy(_terms("corp.codenames", Action.BLOCK, "bluebird", "nightingale"))

    with pytest.raises(PermissionDenied) as info:
        policy.check("status of NIGHTINGALE?")

    assert "corp.codenames (term 2)" in info.value.message
    assert "category test" in info.value.message
    assert "nightingale" not in info.value.message.casefold()


def test_a_redact_term_rule_replaces_every_occurrence_with_its_placeholder() -> None:
    policy = _policy(_terms("corp.codenames", Action.REDACT, "Bluebird", placeholder="[CODENAME]"))

    checked = policy.check("Bluebird ships; BLUEBIRD is late; bluebirds sing")

    assert checked.text == "[CODENAME] ships; [CODENAME] is late; [CODENAME]s sing"
    assert checked.redactions == ["corp.codenames"]


def test_whole_word_terms_match_only_whole_words() -> None:
    policy = _policy(_terms("deny.words", Action.BLOCK, "ass", whole_word=True))

    assert policy.check("a classic bass passage").text == "a classic bass passage"
    with pytest.raises(PermissionDenied):
        policy.check("you ass!")


def test_ten_thousand_terms_are_matched_in_one_pass() -> None:
    terms = [f"term{i:05d}x" for i in range(10_000)]
    policy = _policy(_terms("big.list", Action.BLOCK, *terms))

    with pytest.raises(PermissionDenied, match=r"big.list \(term 9877\)"):
        policy.check("mentions term09876x somewhere")
    assert policy.check("mentions term0987 only").text == "mentions term0987 only"


def test_the_same_term_in_two_rules_counts_for_both() -> None:
    policy = _policy(
        _terms("a.allow", Action.ALLOW, "open sesame"),
        _terms("b.block", Action.BLOCK, "sesame"),
    )

    assert policy.check("say open sesame").text == "say open sesame"
    with pytest.raises(PermissionDenied):
        policy.check("just sesame")


def test_rule_ids_must_be_unique() -> None:
    with pytest.raises(ValueError, match="repeated: x"):
        RuleSet([_terms("x", Action.BLOCK, "a"), _terms("x", Action.BLOCK, "b")], Direction.PROMPT)


# --- pattern rules ------------------------------------------------------------------


def test_a_redact_pattern_rule_with_its_own_placeholder() -> None:
    rule = _pattern("secret.openai", Action.REDACT, r"sk-[A-Za-z0-9]{20,}", placeholder="[API_KEY]")

    checked = _policy(rule).check("use sk-abcdefghijklmnopqrstuvwx please")

    assert checked.text == "use [API_KEY] please"


def test_custom_rules_rank_above_the_built_in_redactions() -> None:
    # A ticket id that happens to look like a phone number.
    rule = _pattern("corp.ticket", Action.REDACT, r"TCK 0\d{2} \d{7}", placeholder="[TICKET]")

    assert _policy(rule).check("see TCK 020 7946095").text == "see [TICKET]"


# --- allow rules --------------------------------------------------------------------


def test_an_allow_rule_keeps_addresses_of_an_allow_listed_domain() -> None:
    allow = _pattern("allow.corp_mail", Action.ALLOW, r"[A-Za-z0-9._%+-]+@headrace\.example\b")
    policy = _policy(allow)

    checked = policy.check("write to help@headrace.example or bob@gmail.com")

    assert checked.text == "write to help@headrace.example or [EMAIL]"
    assert checked.redactions == ["pii.email"]


def test_an_allow_rule_only_exempts_matches_entirely_inside_it() -> None:
    allow = _terms("allow.phrase", Action.ALLOW, "kill the process")
    block = _terms("deny.violence", Action.BLOCK, "kill")
    policy = _policy(allow, block)

    assert policy.check("how do I kill the process 42?").text == "how do I kill the process 42?"
    with pytest.raises(PermissionDenied):
        policy.check("kill them all, then kill the process")


def test_allow_verdicts_report_the_allow_rule_that_acted() -> None:
    allow = _pattern("allow.corp_mail", Action.ALLOW, r"[a-z]+@headrace\.example\b")

    verdict = _policy(allow).evaluate("write to help@headrace.example")

    assert [h.rule.id for h in verdict.hits] == ["allow.corp_mail"]


# --- the same rules on the output stream -------------------------------------------


def test_a_redact_term_is_redacted_in_the_stream_across_pieces() -> None:
    policy = _policy(_terms("corp.codenames", Action.REDACT, "bluebird", placeholder="[CODENAME]"))

    released, blocked, _ = _stream_all(
        policy.stream_filter(), "the Bluebird launch is near", size=2
    )

    assert (released, blocked) == ("the [CODENAME] launch is near", False)


def test_an_allow_rule_exempts_text_in_the_stream_even_when_it_arrives_later() -> None:
    policy = _policy(
        _terms("allow.phrase", Action.ALLOW, "kill the process"),
        _terms("deny.violence", Action.BLOCK, "kill"),
    )

    assert _stream_all(policy.stream_filter(), "then kill the process now", size=1) == (
        "then kill the process now",
        False,
        "",
    )
    released, blocked, rule = _stream_all(policy.stream_filter(), "then kill them", size=1)
    assert (blocked, rule) == (True, "deny.violence")
    assert "kill" not in released


def test_an_allow_listed_address_passes_the_stream_and_another_is_redacted() -> None:
    allow = _pattern(
        "allow.corp_mail",
        Action.ALLOW,
        r"[a-z]+@headrace\.example\b",
        chars="[a-z@.]",
        max_length=64,
    )
    policy = _policy(allow)

    released, _, _ = _stream_all(
        policy.stream_filter(), "ask help@headrace.example or bob@gmail.com ok"
    )

    assert released == "ask help@headrace.example or [EMAIL] ok"


def test_a_whole_word_term_waits_for_the_next_character_in_the_stream() -> None:
    policy = _policy(_terms("deny.words", Action.BLOCK, "ass", whole_word=True), redact=False)
    stream = policy.stream_filter()

    assert stream.feed("a cl").text == "a cl"  # "cl" cannot begin "ass"
    held = stream.feed("ass")
    assert (held.text, held.blocked) == ("", False)  # "class" or "cl ass"?
    assert stream.feed("ic").text == "assic"
    result = stream.feed(" ass", end=True)
    assert (result.blocked, result.rule_id) == (True, "deny.words")


def test_a_pattern_rule_with_chars_holds_back_only_a_run_of_those_characters() -> None:
    rule = _pattern(
        "secret.token", Action.REDACT, r"tok_[a-z0-9]{8}", chars="[a-z0-9_]", max_length=12
    )
    stream = _policy(rule, redact=False).stream_filter()

    assert stream.feed("key: tok_ab").text == "key: "
    assert stream.feed("cd1234, done").text == "[REDACTED], "
    assert stream.feed("", end=True).text == "done"


def test_a_pattern_rule_without_chars_holds_back_max_length_characters() -> None:
    rule = _pattern("secret.token", Action.REDACT, r"tok_[a-z0-9]{8}", max_length=12)
    stream = _policy(rule, redact=False).stream_filter()

    assert stream.feed("x" * 20).text == "x" * 8
    assert stream.held == 12


def test_a_prompt_only_rule_does_not_filter_output() -> None:
    rule = _terms(
        "deny.prompt", Action.BLOCK, "forbidden", directions=frozenset({Direction.PROMPT})
    )
    policy = _policy(rule)

    with pytest.raises(PermissionDenied):
        policy.check("forbidden")
    assert policy.stream_filter().feed("forbidden ", end=True).text == "forbidden "


def test_a_private_key_in_the_stream_is_swallowed_up_to_its_end_line() -> None:
    stream = _policy().stream_filter()
    text = (
        "key:\n-----BEGIN RSA PRIVATE KEY-----\n"
        + "QUJD" * 200
        + "\n-----END RSA PRIVATE KEY-----\nbye"
    )

    released, blocked, _ = _stream_all(stream, text, size=5)

    assert (released, blocked) == ("key:\n[PRIVATE_KEY]\nbye", False)


def test_a_private_key_cut_off_by_the_end_of_the_stream_stays_hidden() -> None:
    stream = _policy().stream_filter()

    released, _, _ = _stream_all(stream, "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg", size=4)

    assert released == "[PRIVATE_KEY]"


# --- tiers --------------------------------------------------------------------------


def test_tier_policies_pick_a_policy_by_tier_and_default_to_the_base() -> None:
    base = _policy()
    free = _policy(max_bytes=10)
    tiers = TierPolicies(base, {"free": free})

    assert tiers.for_tier("free") is free
    assert tiers.for_tier("") is base
    assert tiers.for_tier("unknown") is base
    with pytest.raises(InvalidArgument, match="limit is 10"):
        tiers.for_tier("free").check("x" * 11)
