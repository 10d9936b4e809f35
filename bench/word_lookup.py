"""The word signal's look-up, old against new (issue 21, eighth round), in one process.

    .venv/bin/python -m bench.word_lookup --model PATH   # an artefact with word vectors
    .venv/bin/python -m bench.word_lookup --words PATH   # or scripts/distill_word_vectors.py's table

The same 4 KB prompt as bench/injection_classifier.py; its word hashes are looked up
in the artefact's keys by the searchsorted the sixth and seventh rounds used and by the
hash table (classifier.KeyTable) that replaced it, interleaved call by call, CPU time.
Both must give the same row indices (checked before timing).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np

from bench.sanitizer import make_prompt
from headrace.services.sanitizer.classifier import load_model, word_hashes
from scripts.train_injection_classifier import word_vectors

RUNS = 5_000
WARMUP = 500


def searchsorted(keys: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The look-up of the sixth and seventh rounds, as it was."""
    at = np.searchsorted(keys, hashes)
    np.minimum(at, len(keys) - 1, out=at)
    found = keys[at] == hashes
    return at[found], found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", type=Path, help="an artefact with word vectors")
    which.add_argument("--words", type=Path, help="a table from distill_word_vectors.py")
    args = parser.parse_args()
    if args.model is not None:
        words = load_model(args.model).words
        assert words is not None, "the artefact has no word vectors"
    else:
        with np.load(args.words, allow_pickle=False) as data:
            words = word_vectors(data["keys"], data["rows"])
    hashes = word_hashes(make_prompt(random.Random(7)))
    old = searchsorted(words.keys, hashes)
    new = words.known(hashes)  # builds the table on first use
    assert np.array_equal(old[0], new[0]) and np.array_equal(old[1], new[1])
    runs = {
        "searchsorted (before)": (lambda: searchsorted(words.keys, hashes), []),
        "hash table (KeyTable)": (lambda: words.known(hashes), []),
    }
    for i in range(WARMUP + RUNS):
        for fn, cpu in runs.values():
            started = time.thread_time_ns()
            fn()
            if i >= WARMUP:
                cpu.append((time.thread_time_ns() - started) / 1e3)
    print(f"{len(hashes)} words ({int(old[1].sum())} with a row), {len(words.keys)} keys,")
    print(f"{RUNS} interleaved calls each; load average at the end: {os.getloadavg()[0]:.1f}")
    print("| look-up | CPU p10 us | CPU p50 us | CPU p99 us |")
    print("|---|---|---|---|")
    for name, (_, cpu) in runs.items():
        ordered = sorted(cpu)
        p10, p99 = ordered[len(ordered) // 10], ordered[int(len(ordered) * 0.99)]
        print(f"| {name} | {p10:.1f} | {statistics.median(ordered):.1f} | {p99:.1f} |")


if __name__ == "__main__":
    main()
