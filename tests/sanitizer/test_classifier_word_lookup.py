"""The word look-up's hash table (issue 21, eighth round): classifier.KeyTable must
give exactly what the searchsorted over the sorted keys gave before it (the same row
indices in text order, the same found mask), on random and real word hashes, for
absent words, for keys that share a bucket and for queries equal to an unused slot's
filler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from headrace.services.sanitizer.classifier import (
    _KEY_BUCKET,
    _MIX,
    KeyTable,
    WordVectors,
    _inverse64,
    word_hashes,
)

CORPUS = Path(__file__).parent / "corpus"


def searchsorted(keys: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The look-up as it was before the table (the reference)."""
    if len(hashes) == 0 or len(keys) == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(len(hashes), dtype=bool)
    at = np.searchsorted(keys, hashes)
    np.minimum(at, len(keys) - 1, out=at)
    found = keys[at] == hashes
    return at[found], found


def same(keys: np.ndarray, hashes: np.ndarray) -> None:
    expected_at, expected_found = searchsorted(keys, hashes)
    at, found = KeyTable.build(keys).find(hashes)
    assert at.dtype == np.intp and found.dtype == bool
    np.testing.assert_array_equal(found, expected_found)
    np.testing.assert_array_equal(at, expected_at)


def words(vectors_keys: np.ndarray) -> WordVectors:
    dims = 4
    rows = np.arange(len(vectors_keys) * dims, dtype=np.float32).reshape(-1, dims)
    empty = np.zeros(0, dtype=np.float32)
    return WordVectors(
        vectors_keys,
        rows,
        0.0,
        1.0,
        np.zeros(dims, dtype=np.float32),
        np.zeros((0, dims + 1), dtype=np.float32),
        empty,
        empty,
    )


@pytest.mark.parametrize("n", [1, 2, 7, 100, 22_716])
def test_random_hashes_present_and_absent_find_what_searchsorted_finds(n: int) -> None:
    rng = np.random.default_rng(n)
    keys = np.unique(rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False))
    present = rng.choice(keys, 3 * len(keys))  # repeats, in no order
    absent = rng.integers(0, 2**64, 500, dtype=np.uint64)
    extremes = np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64)
    hashes = np.concatenate([present, absent, extremes, keys - np.uint64(1), keys + np.uint64(1)])
    rng.shuffle(hashes)
    same(keys, hashes)


def test_real_word_hashes_find_what_searchsorted_finds() -> None:
    text = " ".join(p.read_text() for p in sorted(CORPUS.glob("*.txt")))
    hashes = word_hashes(text)
    vocabulary = np.unique(hashes)
    keys = vocabulary[::2]  # half the words have a row, the others are absent
    assert len(keys) > 500
    same(keys, hashes)
    loaded = words(keys)
    for query in (hashes, hashes[:1], word_hashes("zzqx qqzv"), hashes[::-1]):
        expected_at, expected_found = searchsorted(keys, query)
        at, found = loaded.known(query)
        np.testing.assert_array_equal(at, expected_at)
        np.testing.assert_array_equal(found, expected_found)
        mean = loaded.rows[expected_at].sum(axis=0, dtype=np.float64) / max(len(expected_at), 1)
        np.testing.assert_array_equal(loaded.vector(query), mean)


def test_keys_that_share_a_bucket_grow_the_table_and_are_all_found() -> None:
    # Keys built to land in one bucket of the first table, more than a bucket holds:
    # the build must double the buckets until they fit, and still find each of them.
    n = 64
    bits = max(1, (n // _KEY_BUCKET).bit_length())
    inverse = np.uint64(_inverse64(int(_MIX)))
    rng = np.random.default_rng(5)
    low = rng.integers(0, 2 ** (64 - bits), 4 * _KEY_BUCKET, dtype=np.uint64)
    crowd = ((np.uint64(3) << np.uint64(64 - bits)) + low) * inverse  # all in bucket 3
    assert len(np.unique((crowd * _MIX) >> np.uint64(64 - bits))) == 1
    keys = np.unique(np.concatenate([crowd, rng.integers(0, 2**64, n, dtype=np.uint64)]))
    table = KeyTable.build(keys)
    assert table.slots.shape[0] > 1 << bits
    same(keys, np.concatenate([keys, keys[::-1], rng.integers(0, 2**64, 100, dtype=np.uint64)]))


def test_keys_no_table_spreads_are_binary_searched_as_before() -> None:
    # More keys than a bucket holds that agree in every top bit after the multiply:
    # no number of buckets separates them (real word hashes never do this).
    inverse = np.uint64(_inverse64(int(_MIX)))
    keys = np.sort(np.arange(100, 100 + 2 * _KEY_BUCKET, dtype=np.uint64) * inverse)
    with pytest.raises(ValueError):
        KeyTable.build(keys)
    hashes = np.concatenate([keys[::3], np.array([1, 2, 3], dtype=np.uint64)])
    at, found = words(keys).known(hashes)
    expected_at, expected_found = searchsorted(keys, hashes)
    np.testing.assert_array_equal(at, expected_at)
    np.testing.assert_array_equal(found, expected_found)


def test_a_query_equal_to_an_unused_slots_filler_is_not_found() -> None:
    rng = np.random.default_rng(7)
    keys = np.unique(rng.integers(0, 2**64, 50, dtype=np.uint64))
    table = KeyTable.build(keys)
    fillers = np.setdiff1d(table.slots.ravel(), keys)
    assert len(fillers) > 0
    at, found = table.find(fillers)
    assert not found.any() and len(at) == 0
    same(keys, np.concatenate([fillers, keys]))


def test_no_words_no_keys_and_duplicate_keys() -> None:
    keys = np.array([5, 9, 11], dtype=np.uint64)
    same(keys, np.zeros(0, dtype=np.uint64))
    at, found = words(np.zeros(0, dtype=np.uint64)).known(np.array([5], dtype=np.uint64))
    assert len(at) == 0 and not found.any()
    with pytest.raises(ValueError):
        KeyTable.build(np.array([5, 5, 9], dtype=np.uint64))
