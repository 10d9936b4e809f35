"""Numeric bounds (`minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`) as GBNF.

llama-cpp-python's JSON Schema converter drops bounds, so `"age": {"type": "integer",
"maximum": 150}` let the model write 1234567890 (which the output filter then took for a
phone number). Here the range is written digit by digit: every integer in [lo, hi], and
no other, is one of the alternatives, and an unbounded side stops, as the converter's own
integer rule does, at 16 digits. Integer alternatives are tuples of (character class,
count): the grammar renders them, and the tests render them as regexes to check every
integer in a window against the range.

A bounded `number` is an integer part (the same alternatives, between the bounds'
integer parts), then "." and a fraction whose digits are compared with the bounds'
digits one at a time (exactly: the bounds are Decimals); no exponent, at most 16
fraction digits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
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
    low, low_open, high, high_open = _bounds(schema, where)
    # The integers the tightest bound on each side allows: above 2.5 or from 2.5 is 3,
    # above 3 is 4; below 2.5 or up to 2.5 is 2, below 3 is 2.
    lo = None if low is None else (math.floor(low) + 1 if low_open else math.ceil(low))
    hi = None if high is None else (math.ceil(high) - 1 if high_open else math.floor(high))
    limit = 10**MAX_DIGITS - 1
    if (lo is not None and lo > limit) or (hi is not None and hi < -limit):
        raise ValueError(
            f"JSON Schema bounds at {where} allow no integer of at most {MAX_DIGITS} digits"
        )
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"JSON Schema bounds at {where} allow no integer (from {lo} to {hi})")
    return lo, hi


def _bounds(
    schema: Mapping[str, Any], where: str
) -> tuple[Decimal | None, bool, Decimal | None, bool]:
    """The tightest bound on each side (None: open) and whether it is exclusive; at an
    equal value an exclusive bound is the tighter. ValueError for a bound that is not a
    finite number."""
    lo: Decimal | None = None
    hi: Decimal | None = None
    lo_open = hi_open = False
    for keyword in BOUNDS:
        if keyword not in schema:
            continue
        value = _finite(schema[keyword], keyword, where)
        exclusive = keyword.startswith("exclusive")
        if keyword.endswith("inimum"):
            if lo is None or value > lo or (value == lo and exclusive):
                lo, lo_open = value, exclusive
        elif hi is None or value < hi or (value == hi and exclusive):
            hi, hi_open = value, exclusive
    return lo, lo_open, hi, hi_open


def _finite(value: Any, keyword: str, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(
            f"JSON Schema keyword {keyword!r} at {where} is not a finite number: {value!r}"
        )
    # repr: the shortest decimal that reads back as the float (0.1, not 0.1000…0555).
    return Decimal(value) if isinstance(value, int) else Decimal(repr(value))


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


# --- numbers -------------------------------------------------------------------------

FRACTION_DIGITS = 16
"""At most this many digits after the point, as the converter's own decimal part: a
model held to a range must not be able to write 0.333… until it runs out of tokens."""

Pending = tuple[str, bool] | None
"""A bound on a fraction still to be met: its remaining digits (no trailing zeros) and
whether it is exclusive; None: met, whatever digits follow."""


def number_bounds(
    schema: Mapping[str, Any], where: str
) -> tuple[Decimal | None, bool, Decimal | None, bool]:
    """(low, low exclusive, high, high exclusive) of a number schema (None: open side).

    Raises ValueError for a bound that is not a finite number and for bounds no number
    of at most 16 integer digits meets."""
    lo, lo_open, hi, hi_open = _bounds(schema, where)
    limit = Decimal(10**MAX_DIGITS)
    if (lo is not None and lo >= limit) or (hi is not None and hi <= -limit):
        raise ValueError(
            f"JSON Schema bounds at {where} allow no number of at most {MAX_DIGITS} digits "
            "before the point"
        )
    if lo is not None and hi is not None and (lo > hi or (lo == hi and (lo_open or hi_open))):
        raise ValueError(f"JSON Schema bounds at {where} allow no number (from {lo} to {hi})")
    return lo, lo_open, hi, hi_open


def number_expression(lo: Decimal | None, lo_open: bool, hi: Decimal | None, hi_open: bool) -> str:
    """A GBNF expression for the numbers between the bounds, written as JSON writes
    them without an exponent: an integer part, then optionally "." and 1-16 digits."""
    alternatives: list[str] = []
    if lo is None or lo < 0:
        # Negative numbers by magnitude: above -hi (or above zero), up to -lo.
        low, low_open = (-hi, hi_open) if hi is not None and hi < 0 else (Decimal(0), True)
        high = None if lo is None else -lo
        alternatives += ['"-" ' + a for a in _decimal_magnitudes(low, low_open, high, lo_open)]
    if hi is None or hi > 0 or (hi == 0 and not hi_open):
        low, low_open = (lo, lo_open) if lo is not None and lo >= 0 else (Decimal(0), False)
        alternatives += _decimal_magnitudes(low, low_open, hi, hi_open)
    return "(" + " | ".join(alternatives) + ")"


def _decimal_magnitudes(lo: Decimal, lo_open: bool, hi: Decimal | None, hi_open: bool) -> list[str]:
    """Alternatives for the non-negative numbers from lo to hi (None: up to 16 digits)."""
    if hi is not None and hi >= 10**MAX_DIGITS:
        hi = None
    whole_lo, frac_lo = _split(lo)
    out: list[str] = []
    if hi is not None:
        whole_hi, frac_hi = _split(hi)
    # Integer parts strictly between the bounds' own: any fraction.
    first, last = whole_lo + 1, None if hi is None else whole_hi - 1
    if last is None or first <= last:
        for _, alternative in integer_alternatives(first, last):
            out.append(f'{_gbnf("", alternative)} ("." [0-9]{{1,{FRACTION_DIGITS}}})?')
    # The low bound's integer part, with a fraction at or above (above) the bound's.
    upper: Pending = None
    if hi is not None and whole_hi == whole_lo:
        upper = (frac_hi, hi_open)
    out += _with_whole(whole_lo, _fraction((frac_lo, lo_open), upper, FRACTION_DIGITS))
    # The high bound's integer part, with a fraction at or below (below) the bound's.
    if hi is not None and whole_hi > whole_lo:
        out += _with_whole(whole_hi, _fraction(None, (frac_hi, hi_open), FRACTION_DIGITS))
    return out


def _split(value: Decimal) -> tuple[int, str]:
    """A non-negative number's integer part and its fraction's digits (no trailing 0)."""
    whole = int(value)
    digits = format(value - whole, "f")
    return whole, (digits.split(".", 1)[1].rstrip("0") if "." in digits else "")


def _with_whole(whole: int, fraction: tuple[bool, list[str]]) -> list[str]:
    empty, rests = fraction
    return ([f'"{whole}"'] if empty else []) + [f'"{whole}" "." {r}' for r in rests]


def _fraction(lower: Pending, upper: Pending, left: int) -> tuple[bool, list[str]]:
    """The digit strings d of at most `left` digits with 0.d within the pending bounds:
    (whether the empty string is one, alternatives for the others)."""
    if lower == ("", False):
        lower = None
    empty = lower is None and (upper is None or upper[0] != "" or not upper[1])
    if left == 0:
        return empty, []
    if lower is None and upper is None:
        return empty, [f"[0-9]{{1,{left}}}"]
    if lower is None and upper == ("", False):  # only zeros (the bound itself)
        return empty, [f'"0"{{1,{left}}}']
    if lower == ("", True) and upper is None:  # anything with a digit that is not 0
        return empty, [_zeros_then_not_zero(zeros, left) for zeros in range(left)]
    groups: list[tuple[int, int, Pending, Pending]] = []
    for digit in range(10):
        after = _step(lower, upper, digit)
        if after is None:
            continue
        if groups and groups[-1][1] == digit - 1 and groups[-1][2:] == after:
            groups[-1] = (groups[-1][0], digit, *after)
        else:
            groups.append((digit, digit, *after))
    out: list[str] = []
    for first, last, low, high in groups:
        digits = f"[{first}]" if first == last else f"[{first}-{last}]"
        if low is None and high is None:
            out.append(digits + (f" [0-9]{{0,{left - 1}}}" if left > 1 else ""))
            continue
        rest_empty, rests = _fraction(low, high, left - 1)
        if rests:
            group = "(" + " | ".join(rests) + ")"
            out.append(f"{digits} {group}?" if rest_empty else f"{digits} {group}")
        elif rest_empty:
            out.append(digits)
    return empty, out


def _zeros_then_not_zero(zeros: int, left: int) -> str:
    """`zeros` zeros, a digit that is not 0, then any digits up to `left` in all."""
    parts = [f'"0"{{{zeros}}}'] if zeros else []
    parts.append("[1-9]")
    if left - zeros - 1:
        parts.append(f"[0-9]{{0,{left - zeros - 1}}}")
    return " ".join(parts)


def _step(lower: Pending, upper: Pending, digit: int) -> tuple[Pending, Pending] | None:
    """The pending bounds after one more digit of the fraction; None: out of range."""
    if lower is not None:
        rest, exclusive = lower
        first = int(rest[0]) if rest else 0
        if digit < first:
            return None
        if digit > first:
            lower = None
        else:
            lower = (rest[1:], exclusive) if rest else lower
            if lower == ("", False):
                lower = None
    if upper is not None:
        rest, exclusive = upper
        first = int(rest[0]) if rest else 0
        if digit > first:
            return None
        upper = None if digit < first else ((rest[1:], exclusive) if rest else upper)
    return lower, upper
