"""The output filter: generated text in, text that may be shown out, piece by piece.

A deny term or a secret split across any piece boundary is still caught,
because the filter holds back exactly the text that could still become (part
of) a match, and no more:

- for term lists: the longest tail of the text that is the beginning of some
  term (the automaton answers this directly);
- for pattern rules: the tail that the rule's `partial` pattern accepts (a
  word that may turn into an e-mail address, digits that may turn into a card
  number), never more than the rule's max_length + 1 characters.

So the hold-back is bounded by the longest rule (the longest term, or the
largest max_length, e.g. 254 for e-mail), but in ordinary prose it is the
last, unfinished word. A match is acted upon once it is final: nothing that
could still arrive can change it (for a regex, its start lies before the text
its rule still holds back; for a whole-word term, a character follows it; and
no allow rule could still grow to cover it). `end=True` makes everything final.

Released text is the generated text itself (not normalised): rules match a
normalised, case-folded view of it, and matches are mapped back, so output
equals input when nothing matches, and a zero-width character inside a term
does not hide it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from headrace.services.runtime.output_filter.rules import (
    Action,
    Direction,
    Hit,
    PatternRule,
    RuleSet,
    TermRule,
    TextView,
    apply_redactions,
    contained,
    resolve_overlaps,
)
from headrace.services.runtime.output_filter.text import ASCII_REMOVED, normalise_char

CONTEXT = 16
"""Released characters kept in front of the held text, for look-behinds and
word boundaries (a rule needs at most this much before a match)."""


@dataclass
class FilterResult:
    """What a StreamFilter releases after one piece of text."""

    text: str
    blocked: bool = False
    rule_id: str = ""
    hits: list[Hit] = field(default_factory=list)
    """The matches that acted on this piece (blocked, redacted, allowed), for metrics."""


@dataclass
class _Step:
    text: str
    hits: list[Hit]
    blocked: Hit | None = None
    rest: str | None = None
    """Text after a private key's opening line, which the caller swallows."""


def stream_view(raw: str) -> TextView:
    """The normalised and folded views of raw output, each mapped back to raw."""
    if raw.isascii() and not ASCII_REMOVED.search(raw):
        # ASCII without controls: normalise leaves it alone; lower() is casefold().
        return TextView(raw, raw, raw.lower())
    norm_parts: list[str] = []
    norm_index: list[int] = []
    for i, ch in enumerate(raw):
        n = normalise_char(ch)
        if n:
            norm_parts.append(n)
            norm_index.extend([i] * len(n))
    norm = "".join(norm_parts)
    folded_parts: list[str] = []
    folded_index: list[int] = []
    for j, ch in enumerate(norm):
        f = ch.casefold()
        folded_parts.append(f)
        folded_index.extend([norm_index[j]] * len(f))
    return TextView(raw, norm, "".join(folded_parts), norm_index, folded_index)


def _first_at_or_after(index: list[int] | None, raw_pos: int) -> int:
    """The first view position whose raw index is >= raw_pos."""
    return raw_pos if index is None else bisect.bisect_left(index, raw_pos)


def _to_raw(index: list[int] | None, pos: int, raw_len: int) -> int:
    """The raw index of view position pos (raw_len past the end)."""
    if index is None:
        return pos
    return index[pos] if pos < len(index) else raw_len


class StreamFilter:
    """Releases generated text as soon as no rule can still match across it."""

    def __init__(self, rules: RuleSet) -> None:
        if rules.direction is not Direction.OUTPUT:
            raise ValueError("a StreamFilter needs the output rules")
        self._rules = rules
        self._buf = ""  # up to CONTEXT released characters, then the held text
        self._live = 0  # where the held text starts in _buf
        self._region: PatternRule | None = None  # inside a private key block
        self._tail = ""  # the end of the swallowed text, to find a closing line split in two
        self.blocked = False

    @property
    def held(self) -> int:
        """How many characters are held back now."""
        return len(self._buf) - self._live

    def feed(self, text: str, *, end: bool = False) -> FilterResult:
        """Add text; return what can be released now (everything, when end)."""
        if self.blocked:
            return FilterResult("", True)
        out: list[str] = []
        hits: list[Hit] = []
        pending: str | None = text
        while pending is not None:
            if self._region is not None:
                pending = self._swallow(pending)
                if pending is None:
                    if end:  # the stream ended inside the block
                        self._region = None
                    break
            self._buf += pending
            step = self._step(end)
            out.append(step.text)
            hits.extend(step.hits)
            if step.blocked is not None:
                self.blocked = True
                self._buf, self._live = "", 0
                return FilterResult("".join(out), True, step.blocked.rule.id, hits)
            pending = step.rest
        return FilterResult("".join(out), hits=hits)

    def _swallow(self, text: str) -> str | None:
        """Drop text up to the region's closing line; the text after it, or None."""
        assert self._region is not None and self._region.closing is not None
        window = self._tail + text
        close = self._region.closing.search(window)
        if close is None:
            self._tail = window[-2 * self._region.max_length :]
            return None
        self._region, self._tail = None, ""
        return window[close.end() :]

    def _holds(self, view: TextView, live: int) -> tuple[dict[str, int], int, int]:
        """Where each rule still holds text back (raw positions): per pattern rule,
        for the terms, and the earliest place an allow rule could still match."""
        rules = self._rules
        n = len(view.text)
        term_hold = n
        if rules.max_term_length:
            folded = view.folded
            start = max(
                _first_at_or_after(view.folded_index, live), len(folded) - rules.max_term_length
            )
            for i in range(start, len(folded)):
                if rules.terms.match(folded[i:]):
                    term_hold = _to_raw(view.folded_index, i, n)
                    break
        pattern_holds: dict[str, int] = {}
        norm_live = _first_at_or_after(view.norm_index, live)
        for rule in rules.patterns:
            pos = max(norm_live, len(view.norm) - rule.max_length - 1)
            m = rule.partial.search(view.norm, pos)
            pattern_holds[rule.id] = _to_raw(view.norm_index, m.start(), n) if m else n
        allow_hold = n
        for rule in rules.rules:
            if rule.action is Action.ALLOW:
                hold = term_hold if isinstance(rule, TermRule) else pattern_holds.get(rule.id, n)
                allow_hold = min(allow_hold, hold)
        return pattern_holds, term_hold, allow_hold

    def _step(self, end: bool) -> _Step:
        """Match the held text, act on final matches, release what is safe."""
        buf, live, rules = self._buf, self._live, self._rules
        n = len(buf)
        view = stream_view(buf)
        hits: list[Hit] = []
        for hit in rules.text_hits(view, whole=False):
            if hit.end <= live:
                continue
            if hit.start < live:
                # Cannot happen while the partial patterns cover every prefix of
                # a match; if one did not, act on the part not yet released.
                hit = Hit(hit.rule, live, hit.end, hit.term)
            hits.append(hit)

        if end:
            pattern_holds: dict[str, int] = {}
            term_hold = allow_hold = n
        else:
            pattern_holds, term_hold, allow_hold = self._holds(view, live)
        last_folded = _to_raw(view.folded_index, len(view.folded) - 1, n) if view.folded else -1

        def final(hit: Hit) -> bool:
            if end:
                return True
            if hit.start >= allow_hold:
                return False
            rule = hit.rule
            if isinstance(rule, TermRule):
                return not rule.whole_word or hit.end <= last_folded
            return hit.start < pattern_holds.get(rule.id, n)

        allowed = [h for h in hits if h.rule.action is Action.ALLOW and final(h)]
        acting = [h for h in hits if h.rule.action is not Action.ALLOW]
        exempt = [h for h in acting if allowed and contained(h, allowed)]
        acting = [h for h in acting if not (allowed and contained(h, allowed))]

        for hit in sorted(acting, key=lambda h: h.start):
            if hit.rule.action is Action.BLOCK and final(hit):
                return _Step("", [hit], blocked=hit)

        cut = min(n, term_hold, *pattern_holds.values())
        for hit in acting:
            if not final(hit):
                cut = min(cut, hit.start)
        moved = True
        while moved:  # never release part of a match
            moved = False
            for hit in acting:
                if hit.start < cut < hit.end:
                    cut, moved = hit.start, True
        cut = max(cut, live)

        taken = resolve_overlaps(
            (h for h in acting if h.rule.action is Action.REDACT and h.end <= cut),
            rules.priority,
        )
        rest = None
        region = next(
            (h for h in taken if isinstance(h.rule, PatternRule) and h.rule.closing), None
        )
        if region is not None:
            taken = [h for h in taken if h.start < region.start] + [region]
            rest, cut = buf[region.end :], region.end
            assert isinstance(region.rule, PatternRule)
            self._region, self._tail = region.rule, ""
        shifted = [Hit(h.rule, h.start - live, h.end - live, h.term) for h in taken]
        released = apply_redactions(buf[live:cut], shifted)
        acted = taken + [
            a for a in allowed if any(contained(h, [a]) and h.end <= cut for h in exempt)
        ]

        if region is not None or end:
            self._buf, self._live = "", 0
        else:
            keep = max(0, cut - CONTEXT)
            self._buf, self._live = buf[keep:], cut - keep
        return _Step(released, acted, rest=rest)
