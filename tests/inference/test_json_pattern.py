"""A schema `pattern` held by llama.cpp's grammar sampler: only valid JSON, only
strings that match, and every matching string reachable.

The judge is llama.cpp's own grammar sampler (what generation uses), fed one byte
token at a time by the tiny model's byte-fallback vocabulary, so any text can be
offered and the result does not depend on how a tokenizer splits it.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.services.inference.structured import schema_grammar
from headrace.services.runtime.errors import InvalidArgument
from tests.support.grammar_judge import Judge, accepts_json, grammar_engine
from tests.support.tiny_model import EOS_ID, FIRST_BYTE_ID

# ECMA 262 classes written out for Python's re, which checks what the grammar let through.
SPACE = "\\t-\\r \\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"

# (the schema's pattern, the same language as a Python regex for re.search)
PATTERNS = [
    pytest.param(r"^[^@]+@[a-z]+$", r"^[^@]+@[a-z]+\Z", id="negated-class"),
    pytest.param(r'^x"y\\.z\d[ -~]{2}$', r'^x"y\\[^\n\r\u2028\u2029]z[0-9][ -~]{2}\Z', id="quote"),
    pytest.param(r"^\d{3}-\d{4}$", r"^[0-9]{3}-[0-9]{4}\Z", id="digits"),
    pytest.param(r"abc", r"abc", id="unanchored"),
    pytest.param(r"^(a|bc)*?x$|^q$", r"^(a|bc)*?x\Z|^q\Z", id="branches"),
    pytest.param(r"^é.$", r"^é[^\n\r\u2028\u2029]\Z", id="non-ascii"),
    pytest.param(r"^\w+\s\S$", rf"^[0-9A-Za-z_]+[{SPACE}][^{SPACE}]\Z", id="classes"),
    pytest.param(r"^[\x01\n\t]+$", r"^[\x01\n\t]+\Z", id="controls"),
]


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Iterator[object]:
    with grammar_engine(tiny_model) as engine:
        yield engine


def pattern_schema(pattern: str) -> dict:
    return {"type": "string", "pattern": pattern}


def accepts(engine: object, pattern: str, text: str) -> bool:
    """Whether the grammar lets the model write exactly `text` (then stop)."""
    return accepts_json(engine, pattern_schema(pattern), text)


# Bytes that can appear in UTF-8 (a grammar judges code points; byte tokens can spell
# sequences no UTF-8 decoder reads, such as F7 BF BF BF, whatever the grammar).
UTF8_BYTES = [FIRST_BYTE_ID + b for b in range(256) if b < 0xC0 or 0xC2 <= b <= 0xF4]


def _text(written: bytearray) -> str | None:
    try:
        return written.decode()
    except UnicodeDecodeError:
        return None


def walk(engine: object, pattern: str, rng: random.Random, steps: int = 120) -> str | None:
    """A random text the grammar allows, byte by byte; None if it did not end in time
    (or spelled no UTF-8). Bytes the pattern spells are preferred, so walks end."""
    judge = Judge(engine, pattern_schema(pattern))
    spelled = {FIRST_BYTE_ID + b for b in (pattern + '"').encode()}
    written = bytearray()
    try:
        for _ in range(steps):
            allowed = judge.allowed([EOS_ID, *UTF8_BYTES])
            assert allowed, f"the grammar is stuck after {bytes(written)!r}"
            if EOS_ID in allowed and rng.random() < 0.4:
                return _text(written)
            allowed = [t for t in allowed if t != EOS_ID] or allowed
            preferred = [t for t in allowed if t in spelled]
            token = rng.choice(preferred if preferred and rng.random() < 0.6 else allowed)
            if token == EOS_ID:
                return _text(written)
            judge.accept(token)
            written.append(token - FIRST_BYTE_ID)
        return None
    finally:
        judge.close()


@pytest.mark.parametrize(("pattern", "python"), PATTERNS)
def test_whatever_the_grammar_lets_through_is_json_that_matches(
    engine: object, pattern: str, python: str
) -> None:
    rng = random.Random(pattern)
    ended = 0
    for _ in range(60):
        text = walk(engine, pattern, rng)
        if text is None:
            continue
        ended += 1
        value = json.loads(text)  # raises on a raw quote, newline or stray backslash
        assert isinstance(value, str), text
        assert re.search(python, value), f"{text} does not match {pattern}"
    assert ended >= 20, f"only {ended} of 60 random walks ended"


@pytest.mark.parametrize(("pattern", "python"), PATTERNS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_matching_string_can_be_written(
    engine: object, pattern: str, python: str, data: st.DataObject
) -> None:
    value = data.draw(st.from_regex(python))
    try:
        text = json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 text can carry it
        return
    assert accepts(engine, pattern, text), f"{text} matches {pattern} but was refused"


def test_text_json_cannot_read_is_refused(engine: object) -> None:
    assert accepts(engine, "^[^@]+@x$", '"a\\"b@x"'), "an escaped quote is one character"
    assert not accepts(engine, "^[^@]+@x$", '"a"b@x"'), "a raw quote ends the string"
    assert not accepts(engine, "^[^@]+@x$", '"a\nb@x"'), "a raw newline"
    assert accepts(engine, "^[^@]+@x$", '"a\\nb@x"')
    assert not accepts(engine, "^[^@]+@x$", '"a\\qb@x"'), "not a JSON escape"
    assert not accepts(engine, "^[^@]+@x$", '"a\\u0040b@x"'), "an escaped '@' is still '@'"
    assert accepts(engine, "^[^@]+@x$", '"a\\u0001b@x"')
    assert accepts(engine, r"^\d{3}$", '"123"')
    assert not accepts(engine, r"^\d{3}$", '"12a"')
    assert accepts(engine, "abc", '"xxabcyy"'), "a pattern is a search, as in JSON Schema"


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        (r"(?<=a)b", "a lookahead or lookbehind"),
        (r"(?!a)b", "a negative lookahead"),
        (r"(a)\1", "a backreference"),
        (r"\bword", "boundary"),
        (r"(?i)abc", "an inline flag"),
        (r"a{5000}", "a repetition bound over 1000"),
        (r"[^\x00-\U0010FFFF]", "admits no character"),
        (r"(", "is not a regular expression"),
    ],
)
def test_what_a_grammar_cannot_hold_is_refused_by_name(pattern: str, says: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(says)):
        schema_grammar(json.dumps({"type": "string", "pattern": pattern}))


@pytest.mark.parametrize("beside", ["minLength", "maxLength", "format"])
def test_a_pattern_with_another_string_constraint_is_refused(beside: str) -> None:
    # The converter compiles the pattern and would silently drop the other constraint.
    value = "date" if beside == "format" else 3
    schema = {"type": "object", "properties": {"code": {"pattern": "^a+$", beside: value}}}
    with pytest.raises(InvalidArgument, match=f"both 'pattern' and '{beside}'"):
        schema_grammar(json.dumps(schema))
