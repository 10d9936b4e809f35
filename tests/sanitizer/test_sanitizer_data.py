"""Which sources a data build reads: candidate sources stay out of the shipped model's
training unless asked for, and evaluation-only sources never train."""

from __future__ import annotations

import pytest

from scripts.sanitizer_data import SOURCES, roles


def test_a_default_build_reads_no_candidate_source() -> None:
    built = roles([])
    candidates = {n for n, s in SOURCES.items() if s.role == "candidate"}
    assert candidates, "the candidates documented in docs/sanitizer.md are declared"
    assert not candidates & set(built)
    assert built["tensor_trust"] == "eval"


def test_a_named_candidate_trains_and_nothing_else_changes_role() -> None:
    built = roles(["fastchat"])
    assert built["fastchat"] == "train"
    assert "pallms" not in built
    assert {n: r for n, r in built.items() if n != "fastchat"} == roles([])


def test_only_candidates_can_be_added() -> None:
    # An evaluation source named here would leak into training.
    for name in ("tensor_trust", "wildguard", "no_such_source"):
        with pytest.raises(SystemExit):
            roles([name])
