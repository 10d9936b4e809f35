"""The views of a text that rules match on, pure Python.

- normalised: NFKC, without zero-width, bidi, control and variation characters.
  Redaction patterns and custom regex rules see this view (case kept).
- folded: the normalised text case-folded. Term lists (Aho-Corasick) see this.
- skeleton: the normalised text case-folded, with look-alike letters
  (Cyrillic, Greek, accented Latin) and leetspeak (1→i, 0→o, 3→e, 4→a, 5→s,
  7→t, @→a, $→s) mapped to a-z and everything else collapsed. The injection rules see it in two forms:
  `spaced` (" ignore previous instructions ", single letters spaced apart are
  joined, so "i g n o r e" becomes "ignore") and `compact` (no separators at
  all, so "ig-nore pre vious" becomes "ignoreprevious").

The prompt path builds these views with C-speed string operations (a 4 KB
prompt takes tens of microseconds); the `*_with_offsets` variants are slower,
pure-Python twins that also say which input character each view character came
from, used only when a match must be placed in the text.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata

# Characters that render as nothing (or nearly) and hide text from filters but
# are not all in Unicode category Cf: the combining grapheme joiner, Hangul
# fillers, Khmer inherent vowels, Mongolian variation selectors and the
# variation selectors themselves.
_EXTRA_INVISIBLE = (
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u3164\uffa0"
    + "".join(map(chr, range(0xFE00, 0xFE10)))
    + "".join(map(chr, range(0xE0100, 0xE01F0)))
)
ASCII_REMOVED = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@functools.cache
def _removed() -> re.Pattern[str]:
    """A class of every character normalise drops: Cc, Cf, Cs (but tab and
    newline) and the invisible extras. Built once (about 0.1 s) on first use."""
    codes = [
        c
        for c in range(sys.maxunicode + 1)
        if unicodedata.category(chr(c)) in ("Cc", "Cf", "Cs") and chr(c) not in "\t\n"
    ]
    codes += map(ord, _EXTRA_INVISIBLE)
    codes.sort()
    ranges: list[str] = []
    start = prev = codes[0]
    for c in [*codes[1:], -1]:
        if c == prev + 1:
            prev = c
            continue
        ranges.append(re.escape(chr(start)) + ("-" + re.escape(chr(prev)) if prev > start else ""))
        start = prev = c
    return re.compile("[" + "".join(ranges) + "]+")


def warm_up() -> None:
    """Build the lazily made tables now, so the first request does not pay for it."""
    _removed()


def normalise(text: str) -> str:
    """NFKC, without zero-width/bidi characters or C0/C1 controls (tab and newline kept)."""
    if text.isascii():
        # NFKC leaves ASCII alone; only controls can go.
        return ASCII_REMOVED.sub("", text) if ASCII_REMOVED.search(text) else text
    return _removed().sub("", unicodedata.normalize("NFKC", text))


@functools.lru_cache(maxsize=8192)
def normalise_char(ch: str) -> str:
    """normalise() of one character: what the stream filter uses, piece by piece.

    Per character, NFKC cannot compose a letter with a following combining
    mark; the views differ from the prompt path only there.
    """
    return normalise(ch)


def fold(norm: str) -> tuple[str, list[int] | None]:
    """The case-folded text and, when folding changed its length (ß → ss),
    the index in `norm` of every folded character; None means 1:1."""
    folded = norm.casefold()
    if len(folded) == len(norm):
        # casefold never maps a character to nothing, so equal length means 1:1.
        return folded, None
    index: list[int] = []
    for i, ch in enumerate(norm):
        index.extend([i] * len(ch.casefold()))
    return folded, index


# --- skeleton -------------------------------------------------------------------

# Look-alikes of Latin letters, lower case (the text is case-folded first).
# Cyrillic and Greek after the Unicode confusables list; Latin letters with
# diacritics are added below from their decompositions.
_CONFUSABLES = {
    # Cyrillic
    "а": "a",
    "б": "b",
    "в": "b",
    "г": "r",
    "д": "d",
    "е": "e",
    "ё": "e",
    "з": "3",
    "и": "u",
    "й": "u",
    "к": "k",
    "л": "n",
    "м": "m",
    "н": "h",
    "о": "o",
    "п": "n",
    "р": "p",
    "с": "c",
    "т": "t",
    "у": "y",
    "ф": "f",
    "х": "x",
    "ц": "u",
    "ч": "4",
    "ш": "w",
    "щ": "w",
    "ъ": "b",
    "ь": "b",
    "ы": "bi",
    "ѕ": "s",
    "і": "i",
    "ї": "i",
    "ј": "j",
    "һ": "h",
    "ԁ": "d",
    "ԛ": "q",
    "ԝ": "w",
    "ӏ": "l",
    "ү": "y",
    "ҫ": "c",
    "ɡ": "g",
    # Greek
    "α": "a",
    "ά": "a",
    "β": "b",
    "γ": "y",
    "δ": "d",
    "ε": "e",
    "έ": "e",
    "ζ": "z",
    "η": "n",
    "ή": "n",
    "θ": "o",
    "ι": "i",
    "ί": "i",
    "ϊ": "i",
    "ΐ": "i",
    "κ": "k",
    "λ": "l",
    "μ": "u",
    "ν": "v",
    "ξ": "e",
    "ο": "o",
    "ό": "o",
    "π": "n",
    "ρ": "p",
    "σ": "o",
    "ς": "s",
    "τ": "t",
    "υ": "u",
    "ύ": "u",
    "ϋ": "u",
    "φ": "f",
    "χ": "x",
    "ψ": "w",
    "ω": "w",
    "ώ": "w",
    "ϲ": "c",
    "ϳ": "j",
    # Latin and other look-alikes that have no decomposition
    "ı": "i",
    "ȷ": "j",
    "ł": "l",
    "ø": "o",
    "đ": "d",
    "ħ": "h",
    "ŧ": "t",
    "ƀ": "b",
    "ɑ": "a",
    "ɩ": "i",
    "ɪ": "i",
    "ʏ": "y",
    "ʀ": "r",
    "ɴ": "n",
    "ʟ": "l",
    "ᴀ": "a",
    "ᴄ": "c",
    "ᴅ": "d",
    "ᴇ": "e",
    "ᴊ": "j",
    "ᴋ": "k",
    "ᴍ": "m",
    "ᴏ": "o",
    "ᴘ": "p",
    "ᴛ": "t",
    "ᴜ": "u",
    "ᴠ": "v",
    "ᴡ": "w",
    "ᴢ": "z",
    "ß": "ss",
    "æ": "ae",
    "œ": "oe",
    "€": "e",
    "£": "l",
    "¡": "i",
}


def _latin_with_diacritics() -> dict[str, str]:
    """é → e, ñ → n, …: Latin letters whose decomposition starts with a-z."""
    table: dict[str, str] = {}
    for code in range(0x00C0, 0x0250):
        ch = chr(code).casefold()
        base = unicodedata.normalize("NFKD", ch)[:1]
        if len(ch) == 1 and "a" <= base <= "z" and ch != base:
            table[ch] = base
    for code in range(0x1E00, 0x1F00):  # Latin Extended Additional (ạ, ẹ, …)
        ch = chr(code)
        base = unicodedata.normalize("NFKD", ch)[:1]
        if "a" <= base <= "z":
            table[ch] = base
    return table


_TO_LATIN = str.maketrans({**_latin_with_diacritics(), **_CONFUSABLES})
# Upper-case Greek and Cyrillic letters that look like Latin capitals.
_UPPER_TO_LATIN = str.maketrans(
    dict(
        zip(
            "ΑΒΕΖΗΙΚΜΝΟΡΤΥΧϹΆΈΉΊΌΎАВЕЗКМНОРСТУХЅІЈԚԜҺҮ",
            "abezhikmnoptyxcaehioyabe3kmhopctyxsijqwhy",
            strict=True,
        )
    )
)

# Leetspeak: what each symbol stands for. Digits without a reading separate words.
LEET = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
LEET.update({"!": "i", "|": "i"})


def _skeleton_byte(b: int) -> int:
    ch = chr(b)
    if "a" <= ch <= "z":
        return b
    if "A" <= ch <= "Z":
        return b + 32
    return ord(LEET.get(ch, " "))


_ASCII_SKELETON = bytes(_skeleton_byte(b) for b in range(256))
# Single letters separated by spaces: a spaced-out word ("i g n o r e"). The
# patterns start with a literal space, which the regex engine skips to quickly.
_SPACED_LETTERS = re.compile(" [a-z] [a-z] ")
_SPACED_RUN = re.compile(" ([a-z](?: [a-z])+)(?= )")


def _to_letters(norm: str) -> str:
    """Look-alikes and case mapped: what the skeleton reads, before leetspeak."""
    if norm.isascii():
        return norm
    # Upper-case Greek and Cyrillic first: their lower case looks different (Ν, ν).
    return norm.translate(_UPPER_TO_LATIN).casefold().translate(_TO_LATIN)


def skeleton(norm: str) -> tuple[str, str]:
    """The spaced and the compact skeleton of normalised text.

    spaced: " words of a-z separated by single spaces ", padded with a space at
    both ends so rules can use spaces as word boundaries; runs of single
    letters are joined. compact: spaced without spaces.
    """
    # Unmapped characters (other scripts, symbols) become '?', then spaces.
    letters = _to_letters(norm).encode("ascii", "replace").translate(_ASCII_SKELETON)
    words = letters.decode("ascii").split()
    spaced = " " + " ".join(words) + " " if words else " "
    if _SPACED_LETTERS.search(spaced):
        spaced = _SPACED_RUN.sub(lambda m: " " + m.group(1).replace(" ", ""), spaced)
    return spaced, spaced.replace(" ", "")


def skeleton_with_offsets(norm: str) -> tuple[str, list[int], str, list[int]]:
    """skeleton(), and for each character of spaced and compact the index of the
    norm character it came from (a padding or separator space points at the
    next letter's source, or len(norm) at the end). Pure Python: use only to
    place a match found on the fast skeleton."""
    letters: list[tuple[str, int]] = []  # (letter or " ", source index)
    for i, ch in enumerate(norm):
        for m in _to_letters(ch):
            out = chr(_ASCII_SKELETON[ord(m)]) if m.isascii() else " "
            letters.append((out, i))
    # Collapse runs of separators into one space, trim, pad.
    words: list[list[tuple[str, int]]] = []
    current: list[tuple[str, int]] = []
    for item in letters:
        if item[0] == " ":
            if current:
                words.append(current)
                current = []
        else:
            current.append(item)
    if current:
        words.append(current)
    # Join runs of single-letter words, as _SPACED_RUN does.
    joined: list[list[tuple[str, int]]] = []
    for k, word in enumerate(words):
        if len(word) == 1 and k > 0 and len(words[k - 1]) == 1 and joined:
            joined[-1].extend(word)
        else:
            joined.append(list(word))
    spaced_chars: list[tuple[str, int]] = [(" ", joined[0][0][1] if joined else len(norm))]
    for k, word in enumerate(joined):
        spaced_chars.extend(word)
        nxt = joined[k + 1][0][1] if k + 1 < len(joined) else len(norm)
        spaced_chars.append((" ", nxt))
    compact_chars = [(c, i) for c, i in spaced_chars if c != " "]
    return (
        "".join(c for c, _ in spaced_chars),
        [i for _, i in spaced_chars],
        "".join(c for c, _ in compact_chars),
        [i for _, i in compact_chars],
    )
