"""Edge cases of the built-in redactions: e-mail, phone numbers, payment cards, IBANs,
keys and tokens; what each must catch and what it must leave alone."""

from __future__ import annotations

import pytest

from headrace.services.runtime.output_filter.redaction import iban_ok, luhn_ok, phone_ok, redact


def _only(text: str) -> str:
    return redact(text)[0]


# --- e-mail ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to a.b+tag@sub.example.co.uk today", "write to [EMAIL] today"),
        ("write to bob@example.com.", "write to [EMAIL]."),
        ("(bob@example.com)", "([EMAIL])"),
        ("<bob_smith-1@ex-ample.io>", "<[EMAIL]>"),
        ("mailto:Bob.Smith@Example.ORG", "mailto:[EMAIL]"),
        ("a@b.co and c@d.com", "[EMAIL] and [EMAIL]"),
        ("...bob@example.com", "...[EMAIL]"),
    ],
    ids=["tags-subdomains", "trailing-dot", "parentheses", "angle", "mailto", "two", "dots-before"],
)
def test_email_addresses_are_redacted(text: str, expected: str) -> None:
    assert _only(text) == expected


def test_two_addresses_glued_together_show_no_local_part() -> None:
    # The first domain reads as example.comalice; the second address keeps only its domain.
    redacted = _only("bob@example.comalice@example.com")

    assert "bob" not in redacted and "alice" not in redacted


@pytest.mark.parametrize(
    "text",
    [
        "follow @headrace on social media",
        "user@localhost has no domain",
        "price: 3 @ $4.50 each",
        "git@github.com:org/repo.git".replace("github.com", "github"),
        "decorators like @dataclass and @property",
        "an @ sign alone",
    ],
)
def test_text_that_only_looks_like_an_email_is_left_alone(text: str) -> None:
    assert _only(text) == text


def test_an_overlong_email_local_part_is_cut_to_64_characters_and_still_redacted() -> None:
    redacted = _only("x" * 80 + "@example.com")

    assert "@example.com" not in redacted
    assert redacted.endswith("[EMAIL]")


# --- phone numbers ------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "+44 20 7946 0958",
        "+44 (0) 20 7946 0958",
        "+1 (202) 555-0143",
        "+1-202-555-0143",
        "+49 30 12345678",
        "+4915112345678",
        "+33 1 23 45 67 89",
        "+81-3-1234-5678",
        "0044 20 7946 0958",
        "(202) 555-0143",
        "202-555-0143",
        "202.555.0143",
        "1-800-555-0199",
        "020 7946 0958",
        "07700 900123",
        "030 12345678",
        "01 23 45 67 89",
        "(020) 7946 0958",
        "0171-1234567",
    ],
)
def test_phone_numbers_in_international_and_national_formats_are_redacted(number: str) -> None:
    assert _only(f"call {number} today") == "call [PHONE] today"


@pytest.mark.parametrize(
    "text",
    [
        "in 2024 we grew",
        "founded in 1999, sold in 2021",
        "revenue was $1,234,567.89",
        "revenue was 1 234 567 euros",
        "the date 2024-05-12 and 12/05/2024",
        "version 1.2.3 and 10.0.19045",
        "IP 192.168.100.200",
        "order 12345678 shipped",
        "between 100 200 3000 units",
        "pi is 3.14159265358979",
        "call 555-0199 (a local number)",
        "2+3=5 and 10-4=6",
        "ISBN 978-3-16-148410-0",
    ],
    ids=[
        "year",
        "years",
        "amount",
        "spaced-amount",
        "dates",
        "versions",
        "ip",
        "order-id",
        "no-area-code",
        "decimal",
        "local-7-digits",
        "arithmetic",
        "isbn",
    ],
)
def test_years_amounts_dates_and_ids_are_not_phone_numbers(text: str) -> None:
    assert _only(text) == text


@pytest.mark.parametrize(
    ("candidate", "ok"),
    [
        ("+1234567", False),
        ("+12345678", True),
        ("+1234567890123456", False),
        ("(100) 555-0143", False),
    ],
    ids=["7-digits", "8-digits", "16-digits", "area-code-1"],
)
def test_phone_digit_counts_and_area_codes(candidate: str, ok: bool) -> None:
    assert phone_ok(candidate) is ok


# --- payment cards ------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "5555 5555 5555 4444",
        "3782 822463 10005",  # Amex 4-6-5
        "378282246310005",
        "3056 930902 5904",  # Diners 4-6-4
        "6011 1111 1111 1117",
        "4222222222222",  # 13 digits
        "6212 3456 7890 1234 502",  # 19 digits, 4-4-4-4-3
    ],
)
def test_luhn_valid_card_numbers_in_printed_groupings_are_redacted(number: str) -> None:
    assert _only(f"card {number} ok") == "card [CARD] ok"


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 ok",  # Luhn fails
        "id 1234567812345678 ok",
        "card 41 1111 1111 1111 11 ok",  # Luhn-valid digits, but no card grouping
        "serial 4111111111111111111111 ok",  # too long
        "tel +4111111111111111 ok",  # after a '+': a phone number at most
        "x4111111111111111 ok",
    ],
    ids=["luhn", "luhn-2", "grouping", "too-long", "plus", "glued"],
)
def test_card_like_numbers_that_are_not_cards_are_left_alone(text: str) -> None:
    assert "[CARD]" not in _only(text)


def test_a_card_is_found_in_a_run_of_other_numbers() -> None:
    redacted = _only("qty 2 4111 1111 1111 1111 123 12 29")

    assert "4111 1111 1111 1111" not in redacted
    assert redacted.startswith("qty 2 [CARD]")


def test_a_chance_luhn_match_across_two_phone_numbers_does_not_hide_either() -> None:
    redacted = _only("+44 20 7946 0958 2 030 12345678")

    assert "7946" not in redacted and "12345678" not in redacted


def test_luhn_check() -> None:
    assert luhn_ok("79927398713")
    assert not luhn_ok("79927398710")


# --- IBAN ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "iban",
    [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82 WEST 1234 5698 7654 32",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91 ABNA 0417 1643 00",
        "NO93 8601 1117 947",  # 15, the shortest
        "MT84 MALT 0110 0001 2345 MTLC AST0 01S",  # 31
    ],
)
def test_ibans_with_valid_check_digits_are_redacted(iban: str) -> None:
    assert _only(f"IBAN: {iban}, thanks") == "IBAN: [IBAN], thanks"


@pytest.mark.parametrize(
    "text",
    [
        "DE88 3704 0044 0532 0130 00",  # check digits wrong
        "DE89 3704 0044 0532 0130 0",  # one short for DE
        "XX89 3704 0044 0532 0130 00",  # unknown country, fails mod 97
        "AB12 CDEF GHIJ KLMN",  # a product code
    ],
    ids=["check-digits", "length", "country", "product-code"],
)
def test_iban_like_strings_that_fail_the_checks_are_left_alone(text: str) -> None:
    assert "[IBAN]" not in _only(text)


def test_an_iban_followed_by_more_capitals_is_cut_at_the_iban() -> None:
    assert _only("DE89 3704 0044 0532 0130 00 EUR") == "[IBAN] EUR"


def test_an_iban_after_another_code_in_the_same_run_is_found() -> None:
    assert _only("REF AB12 DE89 3704 0044 0532 0130 00") == "REF AB12 [IBAN]"


def test_iban_check() -> None:
    assert iban_ok("GB82WEST12345698765432")
    assert iban_ok("GB82 WEST 1234 5698 7654 32")
    assert not iban_ok("GB82WEST12345698765433")


# --- keys, tokens, credentials --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("AKIAIOSFODNN7EXAMPLE", "[AWS_KEY]"),
        ("key=ASIAY34FZKBOKMUTVV7A;", "key=[AWS_KEY];"),
        ("XAKIAIOSFODNN7EXAMPLE", "XAKIAIOSFODNN7EXAMPLE"),
        ("AKIAIOSFODNN7EXAMPL", "AKIAIOSFODNN7EXAMPL"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "Bearer [JWT]"),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----",
            "[PRIVATE_KEY]",
        ),
        (
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK----- done",
            "[PRIVATE_KEY] done",
        ),
        ("-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----", None),
        ("postgres://app:s3cr%40t@db:5432/x", "postgres://[CREDENTIALS]@db:5432/x"),
        ("https://example.com/a:b@c", None),
    ],
    ids=[
        "aws",
        "aws-asia",
        "aws-glued",
        "aws-short",
        "jwt",
        "openssh-key",
        "pgp-key",
        "public-key",
        "url-password",
        "url-path",
    ],
)
def test_keys_tokens_and_url_credentials(text: str, expected: str | None) -> None:
    assert _only(text) == (text if expected is None else expected)


def test_an_email_glued_to_an_aws_key_is_still_redacted() -> None:
    assert _only("AKIAIOSFODNN7EXAMPLE-alice@example.com") == "[AWS_KEY]-[EMAIL]"


@pytest.mark.parametrize(
    "placeholder",
    [
        "[EMAIL]",
        "[PHONE]",
        "[CARD]",
        "[IBAN]",
        "[AWS_KEY]",
        "[JWT]",
        "[PRIVATE_KEY]",
        "[CREDENTIALS]",
    ],
)
def test_placeholders_match_no_rule(placeholder: str) -> None:
    text = f"{placeholder} {placeholder}{placeholder}"

    assert _only(text) == text
