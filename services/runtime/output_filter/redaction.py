"""Built-in redaction of secrets and PII, pure Python.

Each rule finds candidates with a regex that starts with a literal or a
character class (CPython's regex engine then skips ahead quickly; a leading
lookbehind or \\b would make it try every position) and validates them in
Python: boundaries, Luhn for cards, mod-97 and the country's length for
IBANs, digit counts and formats for phone numbers.

The max_length of each rule is the bound the stream filter relies on when it
holds back output: a secret longer than its rule's bound is not guaranteed to
be caught when it arrives split across pieces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

from headrace.services.runtime.output_filter.rules import (
    Action,
    Finder,
    Hit,
    PatternRule,
    Span,
    apply_redactions,
    find_patterns,
    resolve_overlaps,
)

_ALNUM = re.compile(r"[A-Za-z0-9]")


def _alnum_at(text: str, i: int) -> bool:
    return 0 <= i < len(text) and bool(_ALNUM.match(text, i))


def _slices(
    text: str,
    run: re.Match[str],
    separators: re.Pattern[str],
    max_length: int,
    weight: Callable[[str], int],
    can_start: Callable[[str], bool] = lambda group: True,
    joined_before: str = "",
    joined_after: str = "",
    previous_end: int = -1,
) -> Iterator[Span]:
    """The best set of group-aligned, non-overlapping slices of a run of digit
    groups: each slice at most max_length long and of positive weight, the
    total weight as large as possible.

    A run often holds more than the secret (a CVV after a card, a phone number
    before it), and a slice of the wrong groups can pass a check by chance
    (Luhn, 1 in 10): taking the best set rather than the leftmost slice keeps
    a chance match from cutting into the real one. The first group cannot
    start a slice when the run is glued to a letter or digit before it (or to
    one of joined_before), nor can the last end one when glued after it; a
    match of the same rule ending at the run (previous_end) is a boundary, as
    its placeholder will be.
    """
    base = run.start()
    body = run.group(0)
    groups: list[Span] = []
    pos = 0
    for sep in separators.finditer(body):
        groups.append((pos, sep.start()))
        pos = sep.end()
    groups.append((pos, len(body)))
    before = text[base - 1] if base > 0 else ""
    after = text[run.end()] if run.end() < len(text) else ""
    after_next = text[run.end() + 1] if run.end() + 1 < len(text) else ""
    first_ok = base == previous_end or not (
        before.isalnum() or (before and before in joined_before)
    )
    last_ok = not (after.isalnum() or (after and after in joined_after and after_next.isdigit()))
    # Weighted interval scheduling from the right: best[i] is the best total for
    # groups i.., choice[i] the last group of the slice starting at i (or -1).
    m = len(groups)
    best = [0] * (m + 1)
    choice = [-1] * m
    for i in range(m - 1, -1, -1):
        best[i], start = best[i + 1], groups[i][0]
        if (i == 0 and not first_ok) or not can_start(body[start : groups[i][1]]):
            continue
        for j in range(i, m):
            if groups[j][1] - start > max_length:
                break
            if j == m - 1 and not last_ok:
                continue
            w = weight(body[start : groups[j][1]])
            if w > 0 and w + best[j + 1] > best[i]:
                best[i], choice[i] = w + best[j + 1], j
    i = 0
    while i < m:
        if choice[i] >= 0 and best[i] != best[i + 1]:
            yield base + groups[i][0], base + groups[choice[i]][1]
            i = choice[i] + 1
        else:
            i += 1


# --- payment cards ----------------------------------------------------------------

CARD_MAX = 37  # 19 digits and 18 separators
# "[0-9][0-9]*", not "[0-9]+": the same matches, but re then scans for the first digit
# with its charset prefix check (about 40 -> 25 µs over a 4 KB prompt).
_CARD_RUN = re.compile(r"[0-9][0-9]*(?:[ -][0-9]+)*")
_CARD_SEPARATOR = re.compile(r"[ -]")


def luhn_ok(digits: str) -> bool:
    """Whether a digit string passes the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_CARD_GROUPINGS = re.compile(
    r"[0-9]{13,19}|[0-9]{4}(?:[ -][0-9]{4}){2,3}(?:[ -][0-9]{1,4})?|[0-9]{4}[ -][0-9]{6}[ -][0-9]{4,5}"
)


def _card_weight(candidate: str) -> int:
    """The digit count of a card number, else 0: 13-19 digits that pass Luhn,
    grouped as cards are printed (one block, fours, 4-6-5, 4-6-4). Other
    groupings in a run of numbers pass Luhn by chance too often (1 in 10)."""
    if not _CARD_GROUPINGS.fullmatch(candidate):
        return 0
    digits = _CARD_SEPARATOR.sub("", candidate)
    return len(digits) if luhn_ok(digits) else 0


def find_cards(text: str) -> Iterator[Span]:
    """Luhn-valid numbers of 13-19 digits, in one block or printed groups
    (4-4-4-4, 4-6-5, 4-6-4) separated by one space or dash."""
    for run in _CARD_RUN.finditer(text):
        if run.end() - run.start() < 13:  # most numbers in prose: years, amounts
            continue
        # After a '+' the digits are a phone number.
        yield from _slices(text, run, _CARD_SEPARATOR, CARD_MAX, _card_weight, joined_before="+.,")


# --- IBAN -------------------------------------------------------------------------

# ISO 13616 lengths of the registered countries; others must be 15-34 long.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip

IBAN_MAX = 42  # 34 characters and 8 spaces
# "[A-Z][A-Z]", not "[A-Z]{2}", for the same reason as _CARD_RUN (40 -> 21 µs).
_IBAN_RUN = re.compile(r"[A-Z][A-Z][0-9]{2}[A-Z0-9]*(?: [A-Z0-9]+)*")
_IBAN_START = re.compile(r"[A-Z]{2}[0-9]{2}")
_SPACE = re.compile(" ")


def iban_ok(candidate: str) -> bool:
    """Whether an IBAN (spaces allowed) has its country's length and passes mod 97."""
    compact = candidate.replace(" ", "")
    expected = IBAN_LENGTHS.get(compact[:2])
    if expected is not None and len(compact) != expected:
        return False
    if not 15 <= len(compact) <= 34 or not _IBAN_START.match(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def find_ibans(text: str) -> Iterator[Span]:
    """IBANs in upper case, compact or in groups separated by single spaces."""
    for run in _IBAN_RUN.finditer(text):
        if run.end() - run.start() < 15:
            continue
        yield from _slices(
            text,
            run,
            _SPACE,
            IBAN_MAX,
            lambda c: len(c) if iban_ok(c) else 0,
            can_start=lambda g: bool(_IBAN_START.match(g)),
        )


# --- phone numbers ----------------------------------------------------------------

PHONE_MAX = 32
# One character class first (a lone "+" or "(" is a run that is too short).
_PHONE_RUN = re.compile(r"[+(0-9](?:[0-9]|[ .-]?\(?[0-9]|\)[ .-]?[0-9])*\)?")
_PHONE_SEPARATOR = re.compile(r"[ .-]")
_PHONE_FORMS = (
    # International: +CC then groups; 8-15 digits (E.164).
    (re.compile(r"\+[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,5}\)?)+"), 8, 15),
    # International with a 00 prefix.
    (re.compile(r"00[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,5}\)?)+"), 10, 17),
    # North American: (NXX) XXX-XXXX, NXX-XXX-XXXX, NXX.XXX.XXXX, 1-NXX-XXX-XXXX;
    # separators required, the area code starts with 2-9 (so "100 200 3000" is
    # not one). Exchanges are not checked: "555-123-4567" is how people write them.
    (
        re.compile(r"(?:1[ .-]?)?(?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .-])[0-9]{3}[ .-][0-9]{4}"),
        10,
        11,
    ),
    # National with a trunk 0: 020 7946 0958, 07700 900123, 030 12345678,
    # 01 23 45 67 89, (020) 7946 0958, 0171-1234567.
    (re.compile(r"(?:0[1-9][0-9]{0,3}|\(0[1-9][0-9]{0,3}\))(?:[ .-]?[0-9]{2,8}){1,4}"), 9, 12),
)


_PHONE_DIGITS = (min(lo for _, lo, _ in _PHONE_FORMS), max(hi for _, _, hi in _PHONE_FORMS))


def phone_ok(candidate: str) -> bool:
    """Whether a string is a phone number in one of the recognised formats."""
    digits = sum(map(str.isdigit, candidate))
    if not _PHONE_DIGITS[0] <= digits <= _PHONE_DIGITS[1]:
        return False
    for form, lo, hi in _PHONE_FORMS:
        if lo <= digits <= hi and form.fullmatch(candidate):
            return True
    return False


def find_phones(text: str) -> Iterator[Span]:
    """Phone numbers in international (+CC, 00CC) or common national formats.

    Plain digit runs without a + or a leading 0 (years, amounts, ids), dates
    and decimals are not phone numbers; 7-digit local numbers are not caught.
    """
    previous_end = -1
    for run in _PHONE_RUN.finditer(text):
        if run.end() - run.start() < 8:  # the shortest format has 8 digits
            continue
        for span in _slices(
            text,
            run,
            _PHONE_SEPARATOR,
            PHONE_MAX,
            lambda c: len(c) if phone_ok(c) else 0,
            joined_before="+.,/-",
            joined_after=",/.",
            previous_end=previous_end,
        ):
            previous_end = span[1]
            yield span


# --- e-mail -------------------------------------------------------------------------

_EMAIL_DOMAIN = re.compile(
    r"@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})(?![A-Za-z0-9-])"
)
_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
EMAIL_MAX = 254


def find_emails(text: str) -> Iterator[Span]:
    """Addresses local@domain.tld (ASCII; at most 254 characters, 64 before the @).

    The regex anchors on "@domain" (fast) and the local part is read backwards.
    """
    previous_end = 0
    for m in _EMAIL_DOMAIN.finditer(text):
        at = m.start()
        start = at
        # Not back into the previous address: two glued together are two.
        while start > previous_end and text[start - 1] in _LOCAL and at - start < 64:
            start -= 1
        while start < at and text[start] in ".-":
            start += 1
        if start == at or m.end() - start > EMAIL_MAX:
            continue
        previous_end = m.end()
        yield start, m.end()


# --- the rules --------------------------------------------------------------------


def _aws_keys(text: str) -> Iterator[Span]:
    for m in _AWS.finditer(text):
        if not _alnum_at(text, m.start() - 1) and not _alnum_at(text, m.end()):
            yield m.span()


def _jwts(text: str) -> Iterator[Span]:
    for m in _JWT.finditer(text):
        if m.start() == 0 or not re.match(r"[A-Za-z0-9_-]", text[m.start() - 1]):
            yield m.span()


def _url_credentials(text: str) -> Iterator[Span]:
    for m in _URL_CREDENTIALS.finditer(text):
        yield m.span(1)


_AWS = re.compile(r"A[KS]IA[0-9A-Z]{16}")
JWT_MAX = 8192
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,1000}\.eyJ[A-Za-z0-9_-]{5,6000}\.[A-Za-z0-9_-]{0,1180}")
# The user part may itself hold an '@' (an e-mail address as user name).
_URL_CREDENTIALS = re.compile(r"://([^\s:/]{1,256}:[^\s@/]{1,256})@")

REDACTION_RULES: tuple[PatternRule, ...] = (
    PatternRule(
        id="secret.private_key",
        category="secret",
        action=Action.REDACT,
        placeholder="[PRIVATE_KEY]",
        pattern=re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"),
        closing=re.compile(r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"),
        max_length=80,
        partial=re.compile(
            r"(?:-{1,5}|-----(?:B|BE|BEG|BEGI|BEGIN)|-----BEGIN [A-Z0-9 ]{0,58}-{0,5})\Z"
        ),
    ),
    PatternRule(
        id="secret.jwt",
        category="secret",
        action=Action.REDACT,
        placeholder="[JWT]",
        pattern=_JWT,
        finder=_jwts,
        max_length=JWT_MAX,
        partial=re.compile(r"(?<![A-Za-z0-9_-])e(?:y(?:J[A-Za-z0-9_.-]{0,8189})?)?\Z"),
    ),
    PatternRule(
        id="secret.aws_key",
        category="secret",
        action=Action.REDACT,
        placeholder="[AWS_KEY]",
        pattern=_AWS,
        finder=_aws_keys,
        max_length=20,
        partial=re.compile(r"(?<![A-Za-z0-9])(?:A|A[KS]|A[KS]I|A[KS]IA[0-9A-Z]{0,16})\Z"),
    ),
    PatternRule(
        id="secret.url_password",
        category="secret",
        action=Action.REDACT,
        placeholder="[CREDENTIALS]",
        pattern=_URL_CREDENTIALS,
        finder=_url_credentials,
        max_length=513,
        # Only user:password after "://" is replaced, so the scheme before it can go
        # out at once: hold from the ":" of "://", and anything up to the next white
        # space. (Holding the scheme too held back every word of prose.)
        partial=re.compile(r":(?:/(?:/\S{0,520})?)?\Z"),
    ),
    PatternRule(
        id="pii.email",
        category="pii",
        action=Action.REDACT,
        placeholder="[EMAIL]",
        pattern=_EMAIL_DOMAIN,
        finder=find_emails,
        max_length=EMAIL_MAX,
        partial=re.compile(
            r"[A-Za-z0-9._%+-]{1,64}(?:@[A-Za-z0-9.-]{0,253})?\Z|@[A-Za-z0-9.-]{0,253}\Z"
        ),
    ),
    PatternRule(
        id="pii.iban",
        category="pii",
        action=Action.REDACT,
        placeholder="[IBAN]",
        pattern=_IBAN_RUN,
        finder=find_ibans,
        max_length=IBAN_MAX,
        partial=re.compile(
            r"(?<![A-Za-z0-9])(?:[A-Z]{1,2}|[A-Z]{2}[0-9]{1,2}|[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){0,41} ?)\Z"
        ),
    ),
    PatternRule(
        id="pii.card",
        category="pii",
        action=Action.REDACT,
        placeholder="[CARD]",
        pattern=_CARD_RUN,
        finder=find_cards,
        max_length=CARD_MAX,
        partial=re.compile(r"[0-9](?:[ -]?[0-9]){0,36}[ -]?\Z"),
    ),
    PatternRule(
        id="pii.phone",
        category="pii",
        action=Action.REDACT,
        placeholder="[PHONE]",
        pattern=_PHONE_RUN,
        finder=find_phones,
        max_length=PHONE_MAX,
        partial=re.compile(r"[+(]?[0-9][0-9 ().-]{0,31}\Z|[+(]\Z"),
    ),
)
"""Built-in redactions, highest priority first: when matches overlap (an e-mail
address as the user of a URL, card digits inside an IBAN) the earlier rule wins."""


def redact(text: str, rules: Iterable[PatternRule] = REDACTION_RULES) -> tuple[str, list[str]]:
    """Text with every match replaced by its placeholder, and the ids of rules that fired.

    Rules apply in order, each on the text with the earlier rules' matches
    blanked out; placeholders match no rule, so redact(redact(t)) == redact(t).
    """
    rules = tuple(rules)
    priority = {r.id: i for i, r in enumerate(rules)}
    hits = [Hit(rule, s, e) for rule, s, e in find_patterns(text, rules)]
    taken = resolve_overlaps(hits, priority)
    return apply_redactions(text, taken), sorted({h.rule.id for h in taken})


FINDERS: dict[str, Finder] = {
    "jwt": _jwts,
    "aws_key": _aws_keys,
    "url_credentials": _url_credentials,
    "email": find_emails,
    "iban": find_ibans,
    "card": find_cards,
    "phone": find_phones,
}
"""The matchers a pattern rule may name when its policy travels as data
(OutputPattern.finder): code both ends of the wire share, by name."""
