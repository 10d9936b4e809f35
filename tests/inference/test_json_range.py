"""Integer bounds in a JSON Schema, held by the grammar: exactly the integers in range.

The alternatives are checked as regexes over every integer in a window around each
range's ends, and llama.cpp's grammar sampler (the judge generation uses) is fed the
JSON text of integers inside and outside the bounds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from headrace.services.inference.json_range import (
    MAX_DIGITS,
    integer_alternatives,
    integer_bounds,
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
        ({"type": "number", "maximum": 3}, '\'maximum\' at / needs "type": "integer"'),
        ({"maximum": 3}, 'needs "type": "integer"'),
        ({"type": ["integer", "null"], "minimum": 0}, 'needs "type": "integer"'),
        ({"type": "integer", "maximum": 3, "enum": [1, 9]}, "'maximum' at / beside 'enum'"),
        ({"type": "integer", "minimum": 0, "anyOf": [{"const": 1}]}, "beside 'anyOf'"),
    ],
)
def test_bounds_that_cannot_be_held_are_invalid_argument(schema: dict, says: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(says)):
        schema_grammar(json.dumps(schema))


def test_a_bound_in_a_nested_schema_is_named_by_its_pointer() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "number", "minimum": 0}}}
    with pytest.raises(InvalidArgument, match="'minimum' at /properties/n"):
        schema_grammar(json.dumps(schema))


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Iterator[object]:
    with grammar_engine(tiny_model) as engine:
        yield engine


PERSON = {
    "type": "object",
    "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 150}},
    "required": ["age"],
    "additionalProperties": False,
}


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
