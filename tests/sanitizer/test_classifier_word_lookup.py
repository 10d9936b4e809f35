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
    _KEY_LOAD,
    _MIX,
    _MIX2,
    ARTEFACT,
    InjectionClassifier,
    KeyTable,
    WordVectors,
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


def crowd(n: int, group_bits: int, group: int, rng: np.random.Generator) -> np.ndarray:
    """n keys that all fall in one group of a table with 2**group_bits groups."""
    low = rng.integers(0, 2 ** (64 - group_bits), n, dtype=np.uint64)
    inverse = np.uint64(pow(int(_MIX), -1, 1 << 64))
    keys = ((np.uint64(group) << np.uint64(64 - group_bits)) + low) * inverse
    assert len(np.unique((keys * _MIX) >> np.uint64(64 - group_bits))) == 1
    return keys


def test_keys_crowded_into_one_group_are_all_found() -> None:
    # A group of keys far larger than the usual 2-3 still finds a displacement that
    # gives each its own slot (the build places the largest groups first).
    rng = np.random.default_rng(5)
    keys = np.unique(rng.integers(0, 2**64, 200, dtype=np.uint64))
    table = KeyTable.build(keys)
    group_bits = 64 - table.group_shift
    keys = np.unique(np.concatenate([keys, crowd(12, group_bits, 3, rng)]))
    table = KeyTable.build(keys)
    assert 64 - table.group_shift == group_bits
    same(keys, np.concatenate([keys, keys[::-1], rng.integers(0, 2**64, 100, dtype=np.uint64)]))


def test_keys_no_displacement_spreads_are_binary_searched_as_before() -> None:
    # Half the keys in one group: no displacement puts them in distinct free slots (real
    # word hashes, spread by their hash, never do this), so the table is not built and
    # the look-up falls back to the searchsorted it replaced.
    rng = np.random.default_rng(6)
    n = 128
    slot_bits = int(np.ceil(np.log2(n / _KEY_LOAD)))
    keys = np.unique(
        np.concatenate(
            [crowd(n // 2, slot_bits - 2, 1, rng), rng.integers(0, 2**64, n // 2, dtype=np.uint64)]
        )
    )
    with pytest.raises(ValueError):
        KeyTable.build(keys)
    hashes = np.concatenate([keys[::3], np.array([1, 2, 3], dtype=np.uint64)])
    at, found = words(keys).known(hashes)
    expected_at, expected_found = searchsorted(keys, hashes)
    np.testing.assert_array_equal(at, expected_at)
    np.testing.assert_array_equal(found, expected_found)


def test_queries_that_land_in_an_unused_slot_are_not_found() -> None:
    # An unused slot holds the first key (found in its own slot, elsewhere).
    rng = np.random.default_rng(7)
    keys = np.unique(rng.integers(0, 2**64, 50, dtype=np.uint64))
    table = KeyTable.build(keys)
    queries = np.concatenate([keys[:1], rng.integers(0, 2**64, 4000, dtype=np.uint64)])
    group = (queries * _MIX) >> np.uint64(table.group_shift)
    slot = ((queries ^ table.disp[group]) * _MIX2) >> np.uint64(table.slot_shift)
    unused = table.slots == keys[0]
    unused[slot[0]] = False  # the first key's own slot
    assert unused.sum() == len(table.slots) - len(keys)
    assert unused[slot].sum() > 1000  # many queries land in an unused slot
    same(keys, np.concatenate([queries, keys, np.repeat(keys[:1], 5)]))


def test_no_words_no_keys_and_duplicate_keys() -> None:
    keys = np.array([5, 9, 11], dtype=np.uint64)
    same(keys, np.zeros(0, dtype=np.uint64))
    with pytest.raises(ValueError):
        KeyTable.build(np.zeros(0, dtype=np.uint64))
    at, found = words(np.zeros(0, dtype=np.uint64)).known(np.array([5], dtype=np.uint64))
    assert len(at) == 0 and not found.any()
    with pytest.raises(ValueError):
        KeyTable.build(np.array([5, 5, 9], dtype=np.uint64))


def test_the_shipped_models_keys_find_what_searchsorted_finds() -> None:
    # The artefact carries the distilled table's keys (words_keys): every real word.
    with np.load(ARTEFACT, allow_pickle=False) as data:
        keys = data["words_keys"].astype(np.uint64)
    text = " ".join(p.read_text() for p in sorted(CORPUS.glob("*.txt")))
    same(keys, np.concatenate([word_hashes(text), keys, keys ^ np.uint64(1)]))


def test_the_shipped_models_look_up_table_is_built_at_load_not_by_the_first_prompt() -> None:
    # Building it takes ~0.15 s: a first request must not pay it.
    model = InjectionClassifier.load(ARTEFACT)
    assert model.words is not None
    assert isinstance(model.words.__dict__.get("_table"), KeyTable)
