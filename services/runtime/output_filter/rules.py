"""Rules and the one-pass matcher, pure Python.

A rule has an id, a category and an action:

- block: the prompt is refused (PERMISSION_DENIED naming the rule id) or the
  response ends (FilterStream answers blocked=True with the rule id);
- redact: the matched text is replaced by the rule's placeholder;
- allow: text it matches is exempt from every other rule (a match of another
  rule that lies entirely inside an allowed span is ignored).

Three kinds: TermRule (lists of literal terms, case-insensitive, all terms of
all rules in one Aho-Corasick automaton over the case-folded text, one pass),
PatternRule (a regex or a finder function over the normalised text, with a
bound on the length of a match that the stream filter relies on) and
SkeletonRule (anchor words and regexes over the skeleton, for obfuscated
prompt injection: one automaton pass over the skeleton finds the anchors, and
a regex runs only where its anchor ends).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import ahocorasick

from headrace.services.runtime.output_filter.text import fold, skeleton, skeleton_with_offsets


class Action(StrEnum):
    """What a rule does when it matches."""

    BLOCK = "block"
    REDACT = "redact"
    ALLOW = "allow"


class Direction(StrEnum):
    """Which text a rule looks at: prompts (CheckPrompt) or output (FilterStream)."""

    PROMPT = "prompt"
    OUTPUT = "output"


BOTH = frozenset(Direction)
PROMPT_ONLY = frozenset({Direction.PROMPT})

Span = tuple[int, int]
Finder = Callable[[str], Iterable[Span]]


@dataclass(frozen=True, kw_only=True)
class Rule:
    """What every rule has."""

    id: str
    category: str
    action: Action
    directions: frozenset[Direction] = BOTH
    placeholder: str = "[REDACTED]"


@dataclass(frozen=True, kw_only=True)
class TermRule(Rule):
    """Literal terms, matched case-insensitively on the normalised text.

    whole_word: a term matches only between non-alphanumeric characters.
    obfuscated: in prompts, the terms also match the compact skeleton, so
    spacing, leetspeak and look-alike letters do not hide them (use phrases
    of 8+ letters: the skeleton has no word boundaries).
    """

    terms: tuple[str, ...]
    whole_word: bool = False
    obfuscated: bool = False


@dataclass(frozen=True, kw_only=True)
class PatternRule(Rule):
    """A regex (or a finder function) over the normalised text.

    max_length bounds the length of any match: the stream filter holds back at
    most that many characters for this rule. partial matches the end of a
    text that could still grow into a match (it must accept every prefix of
    every match); the stream filter holds back from where it starts.
    closing: for a block that runs until a closing line (a private key), the
    pattern finds the opening line; in prompts the match runs to the end of
    the closing line or of the text, in a stream everything up to the closing
    line is swallowed.
    """

    pattern: re.Pattern[str]
    max_length: int
    partial: re.Pattern[str]
    finder: Finder | None = None
    closing: re.Pattern[str] | None = None
    needs: tuple[str, ...] = ()
    """If set, the rule runs only on text containing one of these strings (a cheap gate)."""

    def find(self, text: str) -> Iterator[Span]:
        """Spans of the matches in text, left to right, not overlapping."""
        if self.needs and not any(n in text for n in self.needs):
            return
        if self.finder is not None:
            yield from self.finder(text)
            return
        for m in self.pattern.finditer(text):
            if m.end() > m.start():
                yield m.span()

    def find_whole(self, text: str) -> Iterator[Span]:
        """find(), with a region rule's match extended to its closing line (or the end)."""
        if self.closing is None:
            yield from self.find(text)
            return
        pos = 0
        while m := self.pattern.search(text, pos):
            close = self.closing.search(text, m.end())
            end = close.end() if close else len(text)
            yield m.start(), end
            pos = end


@dataclass(frozen=True, kw_only=True)
class SkeletonRule(Rule):
    """Phrases over the spaced or compact skeleton of a prompt (prompt injection).

    parts: (anchor words, remainder) pairs; a match is an anchor word of the
    view followed, right where it ends, by a match of its remainder.
    """

    view: Literal["spaced", "compact"]
    parts: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...]
    directions: frozenset[Direction] = PROMPT_ONLY


@dataclass(frozen=True)
class Hit:
    """One match of one rule, as a span of the text the RuleSet was given."""

    rule: Rule
    start: int
    end: int
    term: int = -1
    """For a term rule, the index of the term in its list."""

    @property
    def label(self) -> str:
        """The rule id, and the term's number (1-based) for term rules; never the text."""
        return f"{self.rule.id} (term {self.term + 1})" if self.term >= 0 else self.rule.id


def contained(hit: Hit, allowed: Sequence[Hit]) -> bool:
    """Whether hit lies entirely inside one of the allowed spans."""
    return any(a.start <= hit.start and hit.end <= a.end for a in allowed)


def resolve_overlaps(hits: Iterable[Hit], priority: dict[str, int]) -> list[Hit]:
    """The redactions to apply: by rule priority, then leftmost, then longest;
    a hit overlapping one already taken is dropped. Sorted by start."""
    taken: list[Hit] = []
    for hit in sorted(hits, key=lambda h: (priority[h.rule.id], h.start, h.start - h.end)):
        if all(hit.end <= t.start or t.end <= hit.start for t in taken):
            taken.append(hit)
    return sorted(taken, key=lambda h: h.start)


def apply_redactions(text: str, hits: Sequence[Hit]) -> str:
    """text with each (non-overlapping, sorted) hit replaced by its placeholder."""
    out: list[str] = []
    pos = 0
    for hit in hits:
        out.append(text[pos : hit.start])
        out.append(hit.rule.placeholder)
        pos = hit.end
    out.append(text[pos:])
    return "".join(out)


def find_patterns(
    text: str, rules: Iterable[PatternRule], *, whole: bool = True
) -> list[tuple[PatternRule, int, int]]:
    """Matches of pattern rules, in rule order, as if each redaction were made
    before the next rule looks: what a redact rule matched is blanked (same
    length, spaces) for the rules after it. So an e-mail address glued to an
    AWS key is still found after the key, and positions stay those of text."""
    found: list[tuple[PatternRule, int, int]] = []
    for rule in rules:
        spans = list(rule.find_whole(text) if whole else rule.find(text))
        found.extend((rule, s, e) for s, e in spans)
        if spans and rule.action is Action.REDACT:
            parts: list[str] = []
            pos = 0
            for s, e in spans:
                parts += [text[pos:s], " " * (e - s)]
                pos = e
            text = "".join(parts) + text[pos:]
    return found


def _boundary(text: str, start: int, end: int) -> bool:
    return (start == 0 or not text[start - 1].isalnum()) and (
        end >= len(text) or not text[end].isalnum()
    )


@dataclass
class TextView:
    """A text and its folded view, with the map from folded to text positions.

    For prompts the text is the normalised prompt; the stream filter builds its
    own view over raw output, where norm_index maps normalised positions back.
    """

    text: str
    norm: str
    folded: str
    norm_index: list[int] | None = None
    """index in text of each norm character; None: norm is text."""
    folded_index: list[int] | None = None
    """index in text of each folded character; None: 1:1 with text."""

    @classmethod
    def of_normalised(cls, norm: str) -> TextView:
        """The view of an already normalised text (the prompt path)."""
        folded, index = fold(norm)
        return cls(norm, norm, folded, None, index)

    def from_norm(self, start: int, end: int) -> Span:
        """A span of norm as a span of text."""
        if self.norm_index is None:
            return start, end
        return self.norm_index[start], self.norm_index[end - 1] + 1

    def from_folded(self, start: int, end: int) -> Span:
        """A span of folded as a span of text."""
        if self.folded_index is None:
            return start, end
        return self.folded_index[start], self.folded_index[end - 1] + 1


@dataclass
class _Payload:
    """What one automaton key stands for: (rule index, term index) pairs."""

    length: int
    owners: list[tuple[int, int]] = field(default_factory=list)


class RuleSet:
    """The rules of one policy for one direction, compiled for matching."""

    def __init__(self, rules: Sequence[Rule], direction: Direction) -> None:
        self.direction = direction
        self.rules: list[Rule] = [r for r in rules if direction in r.directions]
        ids = [r.id for r in self.rules]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"rule ids must be unique; repeated: {', '.join(duplicates)}")
        self.priority = {r.id: i for i, r in enumerate(self.rules)}
        self.patterns = [r for r in self.rules if isinstance(r, PatternRule)]
        self.skeleton_rules = [r for r in self.rules if isinstance(r, SkeletonRule)]
        self.has_allow = any(r.action is Action.ALLOW for r in self.rules)

        self.terms = ahocorasick.Automaton()
        self.max_term_length = 0
        skeleton_keys: dict[str, dict[str, _Payload]] = {"compact": {}, "spaced": {}}
        for index, rule in enumerate(self.rules):
            if isinstance(rule, TermRule):
                for t, term in enumerate(rule.terms):
                    key = term.casefold()
                    if not key.strip():
                        continue
                    payload = self.terms.get(key, None) or _Payload(len(key))
                    payload.owners.append((index, t))
                    self.terms.add_word(key, payload)
                    self.max_term_length = max(self.max_term_length, len(key))
                    if rule.obfuscated and direction is Direction.PROMPT:
                        compact = skeleton(term)[1]
                        if compact:
                            keys = skeleton_keys["compact"]
                            keys.setdefault(compact, _Payload(len(compact))).owners.append(
                                (index, t)
                            )
            elif isinstance(rule, SkeletonRule):
                keys = skeleton_keys[rule.view]
                for p, (anchors, _) in enumerate(rule.parts):
                    for anchor in anchors:
                        keys.setdefault(anchor, _Payload(len(anchor))).owners.append((index, p))
        if self.max_term_length:
            self.terms.make_automaton()
        self.skeleton_automata: dict[str, ahocorasick.Automaton] = {}
        for view_name, keys in skeleton_keys.items():
            if keys:
                automaton = ahocorasick.Automaton()
                for key, payload in keys.items():
                    automaton.add_word(key, payload)
                automaton.make_automaton()
                self.skeleton_automata[view_name] = automaton

    # --- the text views ---------------------------------------------------------

    def text_hits(self, view: TextView, *, whole: bool = True) -> list[Hit]:
        """Matches of the term and pattern rules, as spans of view.text.

        whole: region rules (private keys) run to their closing line; the
        stream filter passes False and gets the opening line only.
        """
        hits: list[Hit] = []
        if self.max_term_length:
            folded = view.folded
            for end, payload in self.terms.iter(folded):
                start = end + 1 - payload.length
                for index, t in payload.owners:
                    rule = self.rules[index]
                    assert isinstance(rule, TermRule)
                    if rule.whole_word and not _boundary(folded, start, end + 1):
                        continue
                    s, e = view.from_folded(start, end + 1)
                    hits.append(Hit(rule, s, e, t))
        for rule, start, end in find_patterns(view.norm, self.patterns, whole=whole):
            s, e = view.from_norm(start, end)
            hits.append(Hit(rule, s, e))
        return hits

    # --- the skeleton -------------------------------------------------------------

    def skeleton_hits(self, view: TextView, *, spans: bool) -> list[Hit]:
        """Matches of the skeleton rules and obfuscated terms (prompts only).

        With spans=False the hits carry (0, 0) and cost only the fast skeleton;
        with spans=True they are placed in view.text (pure Python, slower).
        """
        if not self.skeleton_automata:
            return []
        spaced, compact = skeleton(view.norm)
        found: list[tuple[Rule, str, int, int, int]] = []  # rule, view, start, end, term
        for which, automaton in self.skeleton_automata.items():
            text = spaced if which == "spaced" else compact
            for end, payload in automaton.iter(text):
                start = end + 1 - payload.length
                for index, k in payload.owners:
                    rule = self.rules[index]
                    if isinstance(rule, SkeletonRule):
                        m = rule.parts[k][1].match(text, end + 1)
                        if m:
                            found.append((rule, which, start, m.end(), -1))
                    else:
                        found.append((rule, which, start, end + 1, k))
        if not spans:
            return [Hit(rule, 0, 0, t) for rule, _, _, _, t in found]
        _, spaced_index, _, compact_index = skeleton_with_offsets(view.norm)
        n = len(view.norm)
        hits: list[Hit] = []
        for rule, which, start, end, t in found:
            index = spaced_index if which == "spaced" else compact_index
            # Spaced matches may begin or end on a padding space; trim to letters.
            text = spaced if which == "spaced" else compact
            while start < end and text[start] == " ":
                start += 1
            while end > start and text[end - 1] == " ":
                end -= 1
            if start >= end:
                continue
            s, e = view.from_norm(index[start], min(index[end - 1] + 1, n))
            hits.append(Hit(rule, s, e, t))
        return hits
