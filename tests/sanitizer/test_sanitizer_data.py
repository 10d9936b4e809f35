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


def test_disjoint_instructions_are_no_benign_row(monkeypatch: pytest.MonkeyPatch) -> None:
    # Issue 21, tenth round: with --disjoint-instructions the override attacks' new
    # instructions come from self-instruct tasks that are not benign rows.
    from scripts import sanitizer_data

    tasks = [f"Task {i}: do thing {i}." + ("\n\ninput" if i % 3 else "") for i in range(175)]
    monkeypatch.setattr(
        sanitizer_data,
        "self_instruct",
        lambda m: iter(sanitizer_data.row(t, 0, "instruction", "self_instruct") for t in tasks),
    )
    kept, new = sanitizer_data.instruction_split(None)  # type: ignore[arg-type]
    assert len(kept) == 88 and len(new) == 87
    assert not {t.split("\n\n")[0] for t in kept} & set(new)
    assert {t.split("\n\n")[0] for t in kept} | set(new) == {t.split("\n\n")[0] for t in tasks}
    assert sanitizer_data.instruction_split(None) == (kept, new)  # type: ignore[arg-type]
    assert sanitizer_data._new_instructions(None, True) == new  # type: ignore[arg-type]
    assert len(sanitizer_data._new_instructions(None, False)) == 175  # type: ignore[arg-type]
