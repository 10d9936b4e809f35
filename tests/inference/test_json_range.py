"""Integer bounds in a JSON Schema, held by the grammar: exactly the integers in range.

The alternatives are checked as regexes over every integer in a window around each
range's ends, and llama.cpp's grammar sampler (the judge generation uses) is fed the
JSON text of integers inside and outside the bounds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from headrace.services.inference.json_range import (
    MAX_DIGITS,
    integer_alternatives,
    integer_bounds,
    number_bounds,
    number_expression,
)
from headrace.services.inference.structured import schema_grammar
from headrace.services.runtime.errors import InvalidArgument
from tests.support.grammar_judge import accepts_json, grammar_engine

RANGES = [
    (0, 150),
    (1, 9),
    (10, 99),
    (0, 0),
    (100, 100),
    (19, 21),
    (99, 1000),
    (123, 4567),
    (-5, 5),
    (-150, -3),
    (-1, -1),
    (-1000, 999),
    (None, 42),
    (7, None),
    (None, -12),
    (-1000, None),
    (None, None),
    (0, None),
]


def as_regex(lo: int | None, hi: int | None) -> re.Pattern[str]:
    alternatives = []
    for sign, parts in integer_alternatives(lo, hi):
        body = "".join(f"[{digits}]{{{count}}}" for digits, count in parts)
        alternatives.append(re.escape(sign) + body)
    return re.compile("|".join(alternatives))


def probes(lo: int | None, hi: int | None) -> Iterator[int]:
    yield from range(-2100, 2101)
    for end in (lo, hi):
        if end is not None:
            yield from range(end - 1100, end + 1100)
    top = 10**MAX_DIGITS - 1
    yield from (top, -top, 10**12 + 7, -(10**12) - 7)


@pytest.mark.parametrize(("lo", "hi"), RANGES)
def test_the_alternatives_hold_exactly_the_integers_in_range(
    lo: int | None, hi: int | None
) -> None:
    pattern = as_regex(lo, hi)
    for n in probes(lo, hi):
        inside = (lo is None or n >= lo) and (hi is None or n <= hi)
        assert bool(pattern.fullmatch(str(n))) == inside, (lo, hi, n)
    # JSON writes no leading zeros and no minus zero.
    for text in ("00", "01", "007", "-0", "-01", "+5", ""):
        assert not pattern.fullmatch(text), (lo, hi, text)


@pytest.mark.parametrize(
    ("schema", "bounds"),
    [
        ({"minimum": 0, "maximum": 150}, (0, 150)),
        ({"exclusiveMinimum": 0}, (1, None)),
        ({"exclusiveMaximum": 3}, (None, 2)),
        ({"minimum": 1.5, "maximum": 2.5}, (2, 2)),
        ({"exclusiveMinimum": 1.5, "exclusiveMaximum": 4.5}, (2, 4)),
        ({"minimum": 5, "exclusiveMinimum": 7}, (8, None)),
        ({"maximum": -3, "exclusiveMaximum": -3}, (None, -4)),
        ({}, (None, None)),
    ],
)
def test_bounds_become_an_inclusive_integer_range(schema: dict, bounds: tuple) -> None:
    assert integer_bounds({"type": "integer", **schema}, "/") == bounds


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ({"type": "integer", "minimum": 5, "maximum": 3}, "allow no integer (from 5 to 3)"),
        ({"type": "integer", "minimum": 2.2, "maximum": 2.8}, "allow no integer"),
        ({"type": "integer", "minimum": 10**17}, "allow no integer of at most 16 digits"),
        ({"type": "integer", "minimum": "5"}, "'minimum' at / is not a finite number"),
        ({"type": "integer", "maximum": True}, "'maximum' at / is not a finite number"),
        ({"type": "string", "maximum": 3}, '\'maximum\' at / needs "type": "integer" or "number"'),
        ({"maximum": 3}, 'needs "type": "integer" or "number"'),
        ({"type": ["integer", "null"], "minimum": 0}, 'needs "type": "integer" or "number"'),
        ({"type": "number", "minimum": 2, "exclusiveMaximum": 2}, "allow no number (from 2 to 2)"),
        ({"type": "number", "minimum": 1e17}, "allow no number of at most 16 digits"),
        ({"type": "number", "maximum": float("nan")}, "is not a finite number"),
        ({"type": "integer", "maximum": 3, "enum": [1, 9]}, "'maximum' at / beside 'enum'"),
        ({"type": "integer", "minimum": 0, "anyOf": [{"const": 1}]}, "beside 'anyOf'"),
    ],
)
def test_bounds_that_cannot_be_held_are_invalid_argument(schema: dict, says: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(says)):
        schema_grammar(json.dumps(schema))


def test_a_bound_in_a_nested_schema_is_named_by_its_pointer() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "string", "minimum": 0}}}
    with pytest.raises(InvalidArgument, match="'minimum' at /properties/n"):
        schema_grammar(json.dumps(schema))


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Iterator[object]:
    with grammar_engine(tiny_model) as engine:
        yield engine


def one_field(name: str, schema: dict) -> dict:
    return {
        "type": "object",
        "properties": {name: schema},
        "required": [name],
        "additionalProperties": False,
    }


PERSON = one_field("age", {"type": "integer", "minimum": 0, "maximum": 150})


@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        ('{"age": 0}', True),
        ('{"age": 42}', True),
        ('{"age": 150}', True),
        ('{"age": 151}', False),
        ('{"age": 1500}', False),
        ('{"age": 1234567890}', False),
        ('{"age": -1}', False),
        ('{"age": 042}', False),
    ],
)
def test_the_grammar_sampler_holds_an_object_field_to_its_bounds(
    engine: object, text: str, allowed: bool
) -> None:
    assert accepts_json(engine, PERSON, text) is allowed


@pytest.mark.parametrize(("lo", "hi"), [(-20, 35), (7, None), (None, -12), (99, 1000)])
def test_the_grammar_sampler_takes_each_integer_in_range_and_none_outside(
    engine: object, lo: int | None, hi: int | None
) -> None:
    schema: dict = {"type": "integer"}
    if lo is not None:
        schema["minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    window = range((lo if lo is not None else hi - 60) - 3, (hi if hi is not None else lo + 60) + 4)
    for n in (*window, 10**15, -(10**15)):
        inside = (lo is None or n >= lo) and (hi is None or n <= hi)
        assert accepts_json(engine, schema, str(n)) is inside, (lo, hi, n)


# --- numbers ---------------------------------------------------------------------------


def gbnf_regex(expression: str) -> re.Pattern[str]:
    """The GBNF subset number_expression writes ("lit", [class], ( | ), ?, {m,n}) as a
    Python regex."""
    out, i = [], 0
    while i < len(expression):
        ch = expression[i]
        if ch == '"':
            end = expression.index('"', i + 1)
            out.append(re.escape(expression[i + 1 : end]))
            i = end + 1
            continue
        if ch == "[":
            end = expression.index("]", i)
            out.append(expression[i : end + 1])
            i = end + 1
            continue
        if ch == "(":
            out.append("(?:")
        elif ch != " ":
            out.append(ch)
        i += 1
    return re.compile("".join(out))


ENDS = [None, "-2.5", "-1", "-0.25", "0", "0.1", "0.25", "1", "1.5", "3", "10.75"]


def number_ranges() -> Iterator[tuple[Decimal | None, bool, Decimal | None, bool]]:
    for lo in ENDS:
        for hi in ENDS:
            for lo_open in (False, True):
                for hi_open in (False, True):
                    a = None if lo is None else Decimal(lo)
                    b = None if hi is None else Decimal(hi)
                    if (a is None and lo_open) or (b is None and hi_open):
                        continue
                    if (
                        a is not None
                        and b is not None
                        and (a > b or (a == b and (lo_open or hi_open)))
                    ):
                        continue
                    yield a, lo_open, b, hi_open


def number_texts() -> Iterator[tuple[str, Decimal]]:
    for hundredths in range(-1300, 1301, 5):
        value = Decimal(hundredths) / 100
        whole = value == value.to_integral_value()
        forms = {f"{value:.2f}", f"{value:.3f}", f"{value:.1f}" if hundredths % 10 == 0 else None}
        if whole:
            forms.add(str(int(value)))
        for text in forms - {None}:
            if text.startswith("-") and Decimal(text) == 0:
                continue  # minus zero: never written
            yield text, Decimal(text)
    for text in (
        "0.2500000000000001",
        "0.2499999999999999",
        "0.1000000000000000",
        "3.0000000000000001",
    ):
        yield text, Decimal(text)


def test_number_alternatives_hold_exactly_the_numbers_in_range() -> None:
    texts = list(number_texts())
    checked = 0
    for lo, lo_open, hi, hi_open in number_ranges():
        pattern = gbnf_regex(number_expression(lo, lo_open, hi, hi_open))
        for text, value in texts:
            inside = (lo is None or value > lo or (value == lo and not lo_open)) and (
                hi is None or value < hi or (value == hi and not hi_open)
            )
            assert bool(pattern.fullmatch(text)) == inside, (lo, lo_open, hi, hi_open, text)
            checked += 1
        # Never what JSON cannot read, nor an exponent, nor more than 16 decimals.
        for text in (
            "01",
            "00.5",
            "1.",
            ".5",
            "+1",
            "-0",
            "1e2",
            "0.5.5",
            "0." + "1" * 17,
            "3.0" + "0" * 15 + "1",
        ):
            assert not pattern.fullmatch(text), (lo, lo_open, hi, hi_open, text)
    assert checked > 200_000


@pytest.mark.parametrize(
    ("schema", "bounds"),
    [
        ({"minimum": 0, "maximum": 1}, (Decimal(0), False, Decimal(1), False)),
        ({"exclusiveMinimum": 0}, (Decimal(0), True, None, False)),
        ({"minimum": 0.1, "exclusiveMinimum": 0.1}, (Decimal("0.1"), True, None, False)),
        ({"maximum": 2.5, "exclusiveMaximum": 3}, (None, False, Decimal("2.5"), False)),
        ({"maximum": 1e-7}, (None, False, Decimal("1e-7"), False)),
    ],
)
def test_number_bounds_keep_the_tighter_of_each_side(schema: dict, bounds: tuple) -> None:
    assert number_bounds({"type": "number", **schema}, "/") == bounds


SCORE = one_field("score", {"type": "number", "minimum": 0, "exclusiveMaximum": 1})


@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        ('{"score": 0}', True),
        ('{"score": 0.5}', True),
        ('{"score": 0.9999}', True),
        ('{"score": 1}', False),
        ('{"score": 1.0}', False),
        ('{"score": 1.5}', False),
        ('{"score": -0.1}', False),
        ('{"score": 0.' + "3" * 17 + "}", False),
        ('{"score": 5e-1}', False),
    ],
)
def test_the_grammar_sampler_holds_a_number_to_its_bounds(
    engine: object, text: str, allowed: bool
) -> None:
    assert accepts_json(engine, SCORE, text) is allowed
