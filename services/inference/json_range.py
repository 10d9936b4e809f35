"""Integer bounds (`minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`) as GBNF.

llama-cpp-python's JSON Schema converter drops bounds, so `"age": {"type": "integer",
"maximum": 150}` let the model write 1234567890 (which the output filter then took for a
phone number). Here the range is written digit by digit: every integer in [lo, hi], and
no other, is one of the alternatives, and an unbounded side stops, as the converter's own
integer rule does, at 16 digits. Alternatives are tuples of (character class, count):
the grammar renders them, and the tests render them as regexes to check every integer in
a window against the range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MAX_DIGITS = 16
"""The converter's integer rule allows at most 16 digits; an open side stops there too."""

Part = tuple[str, int]  # (a digit class such as "0-9" or "7", how many times)
Alternative = tuple[Part, ...]

BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def integer_bounds(schema: Mapping[str, Any], where: str) -> tuple[int | None, int | None]:
    """The inclusive integer range a schema's bounds allow (None: open on that side).

    Raises ValueError naming the keyword for a bound that is not a number, and for a
    range no integer is in.
    """
    lo: int | None = None
    hi: int | None = None
    for keyword in BOUNDS:
        if keyword not in schema:
            continue
        value = schema[keyword]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(
                f"JSON Schema keyword {keyword!r} at {where} is not a finite number: {value!r}"
            )
        if keyword == "minimum":
            bound = math.ceil(value)
        elif keyword == "exclusiveMinimum":
            bound = math.floor(value) + 1
        elif keyword == "maximum":
            bound = math.floor(value)
        else:
            bound = math.ceil(value) - 1
        if keyword.endswith("inimum"):
            lo = bound if lo is None else max(lo, bound)
        else:
            hi = bound if hi is None else min(hi, bound)
    limit = 10**MAX_DIGITS - 1
    if (lo is not None and lo > limit) or (hi is not None and hi < -limit):
        raise ValueError(
            f"JSON Schema bounds at {where} allow no integer of at most {MAX_DIGITS} digits"
        )
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"JSON Schema bounds at {where} allow no integer (from {lo} to {hi})")
    return lo, hi


def integer_alternatives(lo: int | None, hi: int | None) -> list[tuple[str, Alternative]]:
    """(sign, digits) alternatives covering exactly the integers in [lo, hi] (None: open)."""
    out: list[tuple[str, Alternative]] = []
    if lo is None or lo < 0:
        # Negative numbers, by magnitude: from max(1, -hi) up to -lo.
        low_magnitude = 1 if hi is None or hi >= 0 else -hi
        out += [("-", a) for a in _magnitudes(low_magnitude, None if lo is None else -lo)]
    if hi is None or hi >= 0:
        out += [("", a) for a in _magnitudes(max(lo or 0, 0), hi)]
    return out


def integer_expression(lo: int | None, hi: int | None) -> str:
    """A GBNF expression for the integers in [lo, hi], as JSON writes them."""
    return "(" + " | ".join(_gbnf(sign, a) for sign, a in integer_alternatives(lo, hi)) + ")"


def _gbnf(sign: str, alternative: Alternative) -> str:
    parts = [f'"{sign}"'] if sign else []
    for digits, count in alternative:
        item = f'"{digits}"' if len(digits) == 1 else f"[{digits}]"
        parts.append(item if count == 1 else f"{item}{{{count}}}")
    return " ".join(parts)


def _magnitudes(lo: int, hi: int | None) -> list[Alternative]:
    """Alternatives for the non-negative integers lo..hi (hi None: up to MAX_DIGITS digits)."""
    limit = 10**MAX_DIGITS - 1
    hi = limit if hi is None else min(hi, limit)
    out: list[Alternative] = []
    while lo <= hi:
        # Split at each power of ten, so both ends of a piece have as many digits.
        top = min(hi, 10 ** len(str(lo)) - 1)
        out += _same_length(str(lo), str(top))
        lo = top + 1
    return out


def _same_length(lo: str, hi: str) -> list[Alternative]:
    """Alternatives for lo..hi, two decimal strings of one length, lo <= hi."""
    if not lo:
        return [()]
    if lo[0] == hi[0]:
        return [((lo[0], 1), *rest) for rest in _same_length(lo[1:], hi[1:])]
    rest = len(lo) - 1
    if lo[1:] == "0" * rest and hi[1:] == "9" * rest:  # the whole span of both first digits
        return [((_span(lo[0], hi[0]), 1), *_any(rest))]
    out: list[Alternative] = []
    low_first = lo[0]
    if lo[1:] != "0" * rest:  # lo's first digit, from lo's tail up to all nines
        out += [((lo[0], 1), *tail) for tail in _same_length(lo[1:], "9" * rest)]
        low_first = str(int(lo[0]) + 1)
    high_first = hi[0]
    high_tail: list[Alternative] = []
    if hi[1:] != "9" * rest:  # hi's first digit, from all zeros up to hi's tail
        high_tail = [((hi[0], 1), *tail) for tail in _same_length("0" * rest, hi[1:])]
        high_first = str(int(hi[0]) - 1)
    if low_first <= high_first:  # the first digits in between, any tail
        out.append(((_span(low_first, high_first), 1), *_any(rest)))
    return out + high_tail


def _span(first: str, last: str) -> str:
    return first if first == last else f"{first}-{last}"


def _any(count: int) -> Alternative:
    return (("0-9", count),) if count else ()
