"""TextAssembler: whole UTF-8 characters only, stop strings never echoed."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from headrace.services.inference.text import TextAssembler


def split_bytes(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def test_a_character_split_across_tokens_arrives_whole() -> None:
    text = TextAssembler()
    assert text.feed(b"caf") == "caf"
    assert text.feed(b"\xc3") == ""  # first byte of "é": held back
    assert text.feed(b"\xa9!") == "é!"
    assert text.feed("日".encode()[:2]) == ""
    assert text.feed("日".encode()[2:]) == "日"


def test_a_stop_string_split_across_tokens_ends_the_text_before_it() -> None:
    text = TextAssembler(stop=["END"])
    released = text.feed(b"hello E") + text.feed(b"N") + text.feed(b"D and more")
    assert released == "hello "
    assert text.stopped
    assert text.feed(b"later") == "" and text.finish() == ""


@given(st.text(), st.lists(st.integers(min_value=0, max_value=10_000), max_size=20))
def test_any_text_split_anywhere_comes_out_unchanged(value: str, cuts: list[int]) -> None:
    text = TextAssembler()
    out = "".join(text.feed(piece) for piece in split_bytes(value.encode(), cuts))
    assert out + text.finish() == value


@given(
    st.text(alphabet="abcXYZ é日", max_size=40),
    st.sampled_from(["XYZ", "é日", "ab"]),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
)
def test_output_is_exactly_the_text_before_the_first_stop(
    value: str, stop: str, cuts: list[int]
) -> None:
    text = TextAssembler(stop=[stop])
    out = "".join(text.feed(piece) for piece in split_bytes(value.encode(), cuts))
    out += text.finish()
    expected = value[: value.find(stop)] if stop in value else value
    assert out == expected
    assert stop not in out


def test_a_reply_cut_inside_a_character_ends_at_its_last_whole_one() -> None:
    # max_tokens can end a reply after the first byte(s) of "日": no U+FFFD at the end.
    text = TextAssembler()
    assert text.feed("山".encode() + "日".encode()[:2]) == "山"
    assert text.finish() == ""
    held = TextAssembler(stop=["STOP"])
    assert held.feed(b"ab" + "日".encode()[:1]) == ""
    assert held.finish() == "ab"
    # Bytes no UTF-8 decoder reads are still shown as U+FFFD where they stand.
    bad = TextAssembler()
    assert bad.feed(b"a\xffb") + bad.finish() == "a\ufffdb"
