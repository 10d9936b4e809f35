"""A JSON Schema `pattern` compiled to GBNF for the *JSON text* of a string.

llama-cpp-python's converter copies a pattern into the grammar almost verbatim, which
is wrong three ways for JSON output: a character class (`[^@]`, `[ -~]`) admits a raw
`"`, `\\` or control character, so the model can end the string early or write JSON
no parser reads; a literal `"` or `\\` in the pattern is written unescaped; and
escapes such as `\\d`, `\\w` or `\\s` reach llama.cpp's grammar parser, which does not
know them, so a phone-number pattern failed as "the grammar does not parse".

Here the pattern is parsed by Python's own regex parser and every element becomes the
set of *characters* it admits, then the JSON spellings of those characters: a raw
character where JSON allows one, `\\"`, `\\\\`, `\\n`, `\\t`, ... or `\\u00XX` where it
needs an escape. So every string the grammar lets the model write is valid JSON and,
once decoded, matches the pattern. Classes follow ECMA 262 (JSON Schema's regex
dialect): `\\d` is `[0-9]`, `\\w` is `[A-Za-z0-9_]`, `.` excludes line terminators. A
pattern is a search, as JSON Schema says: without `^` any text may come before the
match, without `$` any text after it. What a grammar cannot hold (lookaround,
backreferences, word boundaries, inline flags) is InvalidArgument naming it.
"""

from __future__ import annotations

import re
import re._constants as sre
import re._parser as sre_parse
from collections.abc import Callable, Iterable, Sequence

from headrace.services.runtime.errors import InvalidArgument

__all__ = ["JSON_STRING_CHAR", "pattern_expression"]

Ranges = list[tuple[int, int]]

_MAX = 0x10FFFF

JSON_STRING_CHAR = '[^"\\\\\\x7F\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
"""GBNF for any one character of a JSON string's text, raw or escaped: the converter's
`char` rule without the raw control characters JSON forbids (as llama.cpp's own
converter and JSON_GBNF have it). Plain strings use it, and patterns where unanchored."""

# Characters JSON writes escaped (and DEL, which llama.cpp's converters escape too).
_ESCAPED: Ranges = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F)]
_SHORT_ESCAPES = {0x22: '\\"', 0x5C: "\\\\", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n"}
_SHORT_ESCAPES |= {0x0D: "\\r", 0x09: "\\t"}

# ECMA 262 classes (JSON Schema patterns are ECMA regular expressions).
_DIGIT: Ranges = [(0x30, 0x39)]
_WORD: Ranges = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
_SPACE: Ranges = [
    (0x09, 0x0D),
    (0x20, 0x20),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
    (0xFEFF, 0xFEFF),
]
_LINE_TERMINATORS: Ranges = [(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)]

_ALLOWED_FLAGS = sre.SRE_FLAG_UNICODE
_MAX_COUNT = 1000
"""The largest {m,n} bound: llama.cpp unrolls a repetition into that many rules."""


def _merge(ranges: Iterable[tuple[int, int]]) -> Ranges:
    merged: Ranges = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _complement(ranges: Ranges) -> Ranges:
    out: Ranges = []
    at = 0
    for lo, hi in _merge(ranges):
        if lo > at:
            out.append((at, lo - 1))
        at = hi + 1
    if at <= _MAX:
        out.append((at, _MAX))
    return out


def _subtract(ranges: Ranges, minus: Ranges) -> Ranges:
    return _complement(_complement(ranges) + minus)


def _contains(ranges: Ranges, code: int) -> bool:
    return any(lo <= code <= hi for lo, hi in ranges)


_CATEGORIES = {
    sre.CATEGORY_DIGIT: _DIGIT,
    sre.CATEGORY_NOT_DIGIT: _complement(_DIGIT),
    sre.CATEGORY_WORD: _WORD,
    sre.CATEGORY_NOT_WORD: _complement(_WORD),
    sre.CATEGORY_SPACE: _SPACE,
    sre.CATEGORY_NOT_SPACE: _complement(_SPACE),
}


def _class_char(code: int) -> str:
    if code < 0x80:
        return chr(code) if chr(code).isalnum() else f"\\x{code:02X}"
    return f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}"


def _gbnf_literal(text: str) -> str:
    """A GBNF string literal for text (which here is always printable ASCII)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _chars(ranges: Ranges, pattern: str) -> str:
    """GBNF for one character of the set, as JSON text: raw where JSON allows it,
    escaped where it must be."""
    alternatives = []
    raw = _subtract(ranges, _ESCAPED)
    if raw:
        alternatives.append(
            "["
            + "".join(
                _class_char(lo) if lo == hi else f"{_class_char(lo)}-{_class_char(hi)}"
                for lo, hi in raw
            )
            + "]"
        )
    escaped = [c for c in range(0x80) if _contains(_ESCAPED, c) and _contains(ranges, c)]
    alternatives.extend(_gbnf_literal(_SHORT_ESCAPES[c]) for c in escaped if c in _SHORT_ESCAPES)
    for high in "01":  # other control characters as \u00XX, one class per high digit
        lows = "".join(f"{c & 0xF:x}" for c in escaped if c < 0x20 and c >> 4 == int(high))
        lows = "".join(x for x in lows if int(high + x, 16) not in _SHORT_ESCAPES)
        if lows:
            alternatives.append(f'"\\\\u00{high}" [{lows}]')
    if 0x7F in escaped:
        alternatives.append('"\\\\u007f"')
    if not alternatives:
        raise _unsupported(pattern, "a character class that admits no character")
    return alternatives[0] if len(alternatives) == 1 else "(" + " | ".join(alternatives) + ")"


def _unsupported(pattern: str, what: str) -> InvalidArgument:
    return InvalidArgument(
        f"the pattern {pattern!r} cannot be compiled to a grammar: {what} cannot be held "
        "by one (supported: literals, classes, \\d \\w \\s, '.', groups, '|', quantifiers, "
        "^ and $)"
    )


Items = Sequence[tuple[object, object]]

_STARTS = (sre.AT_BEGINNING, sre.AT_BEGINNING_STRING)
_ENDS = (sre.AT_END, sre.AT_END_STRING)


class _Compiler:
    """Regex items (Python's parse) to GBNF. `first` / `last` say whether an element
    sits at the very start / end of every string it matches in: only there does a `^`
    / `$` hold (as a no-op, the string's quotes being the anchors)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def sequence(self, items: Items, first: bool, last: bool) -> str:
        parts: list[str] = []
        literal = ""
        for index, (op, av) in enumerate(items):
            code = av if op is sre.LITERAL else None
            if isinstance(code, int) and not _contains(_ESCAPED, code):
                literal += chr(code)  # consecutive plain characters: one GBNF literal
                continue
            if literal:
                parts.append(self._literal(literal))
                literal = ""
            at_first = first and all(o is sre.AT for o, _ in items[:index])
            at_last = last and all(o is sre.AT for o, _ in items[index + 1 :])
            part = self.element(op, av, at_first, at_last)
            if part:
                parts.append(part)
        if literal:
            parts.append(self._literal(literal))
        return " ".join(parts) if parts else '""'

    @staticmethod
    def _literal(text: str) -> str:
        if text.isascii():
            return _gbnf_literal(text)
        return '"' + "".join(_class_char(ord(c)) if ord(c) >= 0x80 else c for c in text) + '"'

    def element(self, op: object, av: object, first: bool, last: bool) -> str:
        if op is sre.LITERAL:
            return _chars([(av, av)], self.pattern)  # type: ignore[list-item]
        if op is sre.NOT_LITERAL:
            return _chars(_complement([(av, av)]), self.pattern)  # type: ignore[list-item]
        if op is sre.ANY:
            return _chars(_complement(_LINE_TERMINATORS), self.pattern)
        if op is sre.IN:
            return _chars(self._set(av), self.pattern)  # type: ignore[arg-type]
        if op is sre.CATEGORY:
            return _chars(_CATEGORIES[av], self.pattern)
        if op is sre.SUBPATTERN:
            _group, add_flags, del_flags, inner = av  # type: ignore[misc]
            if add_flags & ~_ALLOWED_FLAGS or del_flags:
                raise _unsupported(self.pattern, "an inline flag")
            return "(" + self.sequence(inner, first, last) + ")"
        if op is sre.BRANCH:
            _, branches = av  # type: ignore[misc]
            return "(" + " | ".join(self.sequence(b, first, last) for b in branches) + ")"
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            low, high, inner = av  # type: ignore[misc]
            if max(low, 0 if high >= sre.MAXREPEAT else high) > _MAX_COUNT:
                raise _unsupported(self.pattern, f"a repetition bound over {_MAX_COUNT}")
            body = self.sequence(inner, False, False)
            if len(inner) != 1:
                body = f"({body})"
            return body + _quantifier(low, high)
        if op is sre.AT and ((av in _STARTS and first) or (av in _ENDS and last)):
            return ""
        if op is sre.AT:
            raise _unsupported(self.pattern, f"an anchor or boundary ({av}) inside the pattern")
        names = {
            sre.GROUPREF: "a backreference",
            sre.GROUPREF_EXISTS: "a conditional group",
            sre.ASSERT: "a lookahead or lookbehind",
            sre.ASSERT_NOT: "a negative lookahead or lookbehind",
            sre.ATOMIC_GROUP: "an atomic group",
        }
        raise _unsupported(self.pattern, names.get(op, str(op)))  # type: ignore[call-overload]

    def _set(self, items: Items) -> Ranges:
        negate = False
        ranges: Ranges = []
        for op, av in items:
            if op is sre.NEGATE:
                negate = True
            elif op is sre.LITERAL:
                ranges.append((av, av))  # type: ignore[arg-type]
            elif op is sre.RANGE:
                ranges.append(av)  # type: ignore[arg-type]
            elif op is sre.CATEGORY:
                ranges.extend(_CATEGORIES[av])
            else:
                raise _unsupported(self.pattern, f"{op} in a character class")
        return _complement(ranges) if negate else _merge(ranges)


def _quantifier(low: int, high: int) -> str:
    unbounded = high >= sre.MAXREPEAT
    if (low, unbounded) == (0, True):
        return "*"
    if (low, unbounded) == (1, True):
        return "+"
    if unbounded:
        return f"{{{low},}}"
    if (low, high) == (0, 1):
        return "?"
    return f"{{{low}}}" if low == high else f"{{{low},{high}}}"


def pattern_expression(pattern: str, any_char: Callable[[], str]) -> str:
    """GBNF for the text between a JSON string's quotes whose decoded value matches
    `pattern` (searched, as JSON Schema does); `any_char()` names a rule for one JSON
    string character (JSON_STRING_CHAR), called where the pattern is not anchored."""
    try:
        parsed = sre_parse.parse(pattern)
    except re.error as exc:
        raise InvalidArgument(
            f"the pattern {pattern!r} is not a regular expression: {exc}"
        ) from None
    if parsed.state.flags & ~_ALLOWED_FLAGS:
        raise _unsupported(pattern, "an inline flag")
    items = list(parsed)
    # `^a$|b`: each top-level alternative is anchored (or not) on its own.
    if len(items) == 1 and items[0][0] is sre.BRANCH:
        alternatives = items[0][1][1]  # type: ignore[index]
    else:
        alternatives = [items]
    compiler = _Compiler(pattern)
    return "(" + " | ".join(_searched(compiler, a, any_char) for a in alternatives) + ")"


def _searched(compiler: _Compiler, items: Items, any_char: Callable[[], str]) -> str:
    starts, ends = _anchored(items, _STARTS, 0), _anchored(items, _ENDS, -1)
    body = compiler.sequence(items, starts, ends)
    return " ".join(
        [*([] if starts else [f"{any_char()}*"]), body, *([] if ends else [f"{any_char()}*"])]
    )


def _anchored(items: Items, anchors: tuple[object, ...], end: int) -> bool:
    """Whether every match of items is anchored at that end (`^...` or `(^a|^b)`)."""
    if not items:
        return False
    op, av = items[end]
    if op is sre.AT:
        return av in anchors
    if op is sre.SUBPATTERN:
        return _anchored(av[3], anchors, end)  # type: ignore[index]
    if op is sre.BRANCH:
        return all(_anchored(b, anchors, end) for b in av[1])  # type: ignore[index]
    return False
