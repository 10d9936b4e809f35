"""Properties of the output filter and of CheckPrompt's domain function, with hypothesis:
whatever the text and however it is split into pieces, nothing listed passes, output
equals input when nothing matches, redaction is idempotent, and no input crashes."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from headrace.services.runtime.errors import InvalidArgument
from headrace.services.runtime.output_filter.redaction import IBAN_LENGTHS, iban_ok, luhn_ok
from headrace.services.sanitizer.policy import PromptPolicy, StreamFilter, redact

DENY = ["forbidden", "top secret", "exfiltrate", "nightingale-7"]

# Secrets as they appear in text, and the placeholder each must become.
SECRETS = [
    ("alice.smith+news@example.co.uk", "[EMAIL]"),
    ("bob@example.com", "[EMAIL]"),
    ("AKIAIOSFODNN7EXAMPLE", "[AWS_KEY]"),
    ("ASIAY34FZKBOKMUTVV7A", "[AWS_KEY]"),
    (
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "[JWT]",
    ),
    ("4111 1111 1111 1111", "[CARD]"),
    ("5555-5555-5555-4444", "[CARD]"),
    ("378282246310005", "[CARD]"),
    ("DE89 3704 0044 0532 0130 00", "[IBAN]"),
    ("GB82WEST12345698765432", "[IBAN]"),
    ("+44 20 7946 0958", "[PHONE]"),
    ("(555) 123-4567", "[PHONE]"),
    ("+1-202-555-0143", "[PHONE]"),
    ("030 12345678", "[PHONE]"),
    ("https://bob:hunter2@db.example.com/x", "[CREDENTIALS]"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\n-----END RSA PRIVATE KEY-----", "[PRIVATE_KEY]"),
]  # fmt: skip
# What must never show in released text: the secret itself or its distinctive core.
LEAKS = {
    "alice.smith+news@example.co.uk": "alice.smith",
    "bob@example.com": "bob@",
    "AKIAIOSFODNN7EXAMPLE": "IOSFODNN7",
    "ASIAY34FZKBOKMUTVV7A": "FZKBOKMU",
    "4111 1111 1111 1111": "4111 1111",
    "5555-5555-5555-4444": "5555-5555",
    "378282246310005": "3782822463",
    "DE89 3704 0044 0532 0130 00": "3704 0044",
    "GB82WEST12345698765432": "WEST1234",
    "+44 20 7946 0958": "7946 0958",
    "(555) 123-4567": "123-4567",
    "+1-202-555-0143": "555-0143",
    "030 12345678": "12345678",
    "https://bob:hunter2@db.example.com/x": "hunter2",
}
LEAKS[SECRETS[4][0]] = "dozjgNryP4J3"
LEAKS[SECRETS[-1][0]] = "MIIBOgIBAAJB"

# Filler text: letters, digits, punctuation, white space and some non-ASCII, but no
# '@' (no accidental e-mail addresses) and no capitals (no accidental IBAN or AWS key).
FILLER = st.text(alphabet="abcdefghijklmnop xyz.,;:!?-()\n\t0123456789ßéЖ😀\u200b", max_size=25)


def _policy(**overrides: object) -> PromptPolicy:
    options: dict[str, object] = {
        "max_bytes": 1 << 20,
        "max_tokens_estimate": 1 << 20,
        "deny_terms": DENY,
    }
    options.update(overrides)
    return PromptPolicy(**options)  # type: ignore[arg-type]


POLICY = _policy()


@st.composite
def _pieces(draw: st.DrawFn, text: str) -> list[str]:
    """text cut at random places (possibly inside a character sequence, a term or a secret)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=30)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def _run(stream: StreamFilter, pieces: list[str]) -> tuple[str, bool]:
    """Everything released for pieces then end=True, one response per piece, and
    whether the stream was blocked."""
    released = []
    blocked = False
    for i, piece in enumerate(pieces):
        result = stream.feed(piece, end=i == len(pieces) - 1)
        released.append(result.text)
        blocked = blocked or result.blocked
        if result.blocked:
            break
    return "".join(released), blocked


def _mixed_case(draw: st.DrawFn, term: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(term), max_size=len(term)))
    return "".join(c.upper() if f else c for c, f in zip(term, flips, strict=True))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), FILLER, st.sampled_from(DENY), FILLER, st.booleans())
def test_a_deny_term_never_passes_the_stream_filter_however_it_is_split(
    data: st.DataObject, prefix: str, term: str, suffix: str, zero_width: bool
) -> None:
    written = _mixed_case(data.draw, term)
    if zero_width:  # a zero-width character inside the term must not hide it
        written = written[:2] + "\u200b" + written[2:]
    text = prefix + written + suffix
    pieces = data.draw(_pieces(text))

    released, blocked = _run(POLICY.stream_filter(), [*pieces, ""])

    assert blocked
    for t in DENY:
        assert t not in released.casefold().replace("\u200b", "")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.data(),
    st.lists(st.tuples(FILLER, st.sampled_from(SECRETS)), min_size=1, max_size=4),
    FILLER,
)
def test_a_secret_never_passes_the_stream_filter_however_it_is_split(
    data: st.DataObject, parts: list[tuple[str, tuple[str, str]]], tail: str
) -> None:
    # Secrets stand apart from the filler (a space on each side): glued to other
    # digits or letters they are other numbers and words.
    text = "".join(f"{filler} {secret} " for filler, (secret, _) in parts) + tail
    pieces = data.draw(_pieces(text))

    released, blocked = _run(POLICY.stream_filter(), [*pieces, ""])

    assert not blocked
    for _, (secret, placeholder) in parts:
        assert LEAKS[secret] not in released
        # Filler digits next to a secret can make it another kind (a phone number
        # and a digit group after it can pass Luhn): any placeholder will do.
        assert placeholder in released or any(p in released for _, p in SECRETS)


def _luhn_complete(digits: str) -> str:
    for check in "0123456789":
        if luhn_ok(digits + check):
            return digits + check
    raise AssertionError("unreachable")


@st.composite
def _card(draw: st.DrawFn) -> str:
    if draw(st.booleans()):  # Amex, 4-6-5
        number = _luhn_complete(
            draw(st.sampled_from(["34", "37"]))
            + draw(st.text("0123456789", min_size=12, max_size=12))
        )
        groups = [number[:4], number[4:10], number[10:]]
    else:
        number = _luhn_complete(
            draw(st.sampled_from("2456")) + draw(st.text("0123456789", min_size=14, max_size=14))
        )
        groups = [number[i : i + 4] for i in range(0, 16, 4)]
    return draw(st.sampled_from(["", " ", "-"])).join(groups)


@st.composite
def _iban(draw: st.DrawFn) -> str:
    country = draw(st.sampled_from(["DE", "GB", "FR", "NL", "ES", "IT", "CH", "NO", "PL"]))
    length = IBAN_LENGTHS[country]
    bban = draw(st.text("0123456789", min_size=length - 4, max_size=length - 4))
    if country in ("GB", "NL"):
        bban = draw(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=4, max_size=4)) + bban[4:]
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    iban = f"{country}{check:02d}{bban}"
    assert iban_ok(iban)
    if draw(st.booleans()):
        iban = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban


_SECRET = st.one_of(
    _card(),
    _iban(),
    st.from_regex(
        r"[a-z0-9][a-z0-9._+-]{0,15}[a-z0-9]@[a-z0-9]{1,10}(\.[a-z0-9]{1,8}){0,2}\.[a-z]{2,6}",
        fullmatch=True,
    ),
    st.from_regex(r"A[KS]IA[A-Z0-9]{16}", fullmatch=True),
    st.from_regex(r"\+[1-9][0-9]{1,2} [1-9][0-9]{1,3} [0-9]{3,4} [0-9]{4}", fullmatch=True),
    st.from_regex(r"\([2-9][0-9]{2}\) [0-9]{3}-[0-9]{4}", fullmatch=True),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.lists(st.tuples(FILLER, _SECRET), min_size=1, max_size=3), FILLER)
def test_a_generated_secret_never_passes_the_stream_filter_however_it_is_split(
    data: st.DataObject, parts: list[tuple[str, str]], tail: str
) -> None:
    text = "".join(f"{filler} {secret} " for filler, secret in parts) + tail
    pieces = data.draw(_pieces(text))

    released, blocked = _run(POLICY.stream_filter(), [*pieces, ""])

    assert not blocked
    for _, secret in parts:
        assert secret not in released
        middle = secret[len(secret) // 3 : 2 * len(secret) // 3]
        if middle not in text.replace(secret, " "):  # no part of a secret shows either
            assert middle not in released, (secret, released)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.data(),
    st.lists(st.tuples(FILLER, st.sampled_from(SECRETS)), max_size=4),
    FILLER,
)
def test_the_stream_filter_redacts_as_check_prompt_does_for_ascii_text(
    data: st.DataObject, parts: list[tuple[str, tuple[str, str]]], tail: str
) -> None:
    text = "".join(f"{filler} {secret} " for filler, (secret, _) in parts) + tail
    assume(text.isascii() and text.strip())
    pieces = data.draw(_pieces(text))

    released, _ = _run(POLICY.stream_filter(), [*pieces, ""])

    assert released == redact(POLICY.evaluate(text).text)[0] == POLICY.evaluate(text).text


def _nothing_matches(text: str) -> bool:
    result = POLICY.stream_filter().feed(text, end=True)
    return not result.blocked and result.text == text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.text(max_size=80))
def test_output_equals_input_for_any_split_when_nothing_matches(
    data: st.DataObject, text: str
) -> None:
    assume(_nothing_matches(text))
    pieces = data.draw(_pieces(text))

    released, blocked = _run(POLICY.stream_filter(), [*pieces, ""])

    assert not blocked
    assert released == text


def test_output_equals_input_for_text_that_normalisation_would_change() -> None:
    text = "cafe\u0301 \U0001f600 ﬁle ＡＢＣ ½ \x00\x1b\u200b tab\tand\r\nnewline"
    pieces = [text[i : i + 3] for i in range(0, len(text), 3)]

    released, blocked = _run(POLICY.stream_filter(), [*pieces, ""])

    assert (released, blocked) == (text, False)


@settings(max_examples=200, deadline=None)
@given(st.data(), st.text(alphabet="abcdefghij klmnopqrstuvwxyz,.\n", max_size=200))
def test_prose_passes_unchanged_and_is_released_word_by_word(
    data: st.DataObject, text: str
) -> None:
    assume(not any(t in text for t in DENY))
    stream = POLICY.stream_filter()
    released: list[str] = []
    received = ""
    for piece in data.draw(_pieces(text)):
        received += piece
        released.append(stream.feed(piece).text)
        so_far = "".join(released)
        assert received.startswith(so_far)
        # At most the last unfinished word (and the white space after it) is held back.
        held = received[len(so_far) :]
        assert not any(c in held.rstrip(" \n") for c in " \n")
    released.append(stream.feed("", end=True).text)

    assert "".join(released) == text


@settings(max_examples=400, deadline=None)
@given(st.data(), st.text(max_size=120))
def test_no_input_crashes_the_stream_filter(data: st.DataObject, text: str) -> None:
    pieces = data.draw(_pieces(text))
    stream = POLICY.stream_filter()

    for piece in pieces:
        result = stream.feed(piece)
        assert isinstance(result.text, str)
    stream.feed("", end=True)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_no_input_crashes_check_prompt(text: str) -> None:
    try:
        verdict = POLICY.evaluate(text)
    except InvalidArgument:
        return
    assert isinstance(verdict.text, str)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            FILLER,
            st.sampled_from([s for s, _ in SECRETS]),
            st.sampled_from(["[EMAIL]", "[CARD]", "x@", "@y.com", "+", "0", "AKIA", "eyJ"]),
        ),
        max_size=10,
    ),
    st.sampled_from(["", " ", "\n", ", ", "-"]),
)
def test_redaction_is_idempotent(fragments: list[str], separator: str) -> None:
    once, _ = redact(separator.join(fragments))

    assert redact(once)[0] == once


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_check_prompt_output_is_a_fixed_point(text: str) -> None:
    """A prompt that passed once passes again unchanged (redaction is idempotent
    through normalisation too)."""
    try:
        once = POLICY.evaluate(text)
    except InvalidArgument:
        return
    assume(once.blocked is None)

    assert POLICY.evaluate(once.text).text == once.text
