"""A/B experiments: a sticky, even split; correct statistics in the report."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from headrace.services.router.experiments import (
    Arm,
    Experiment,
    Experiments,
    assign,
    render_report,
    report,
    t_quantile,
    t_two_sided_p,
    welch,
)
from headrace.services.router.tasks import PresetParams

ARMS = [
    Arm(name="a", params=PresetParams(temperature=0.2)),
    Arm(name="b", params=PresetParams(temperature=0.8)),
]


def test_a_thousand_subjects_split_evenly_and_each_keeps_its_arm() -> None:
    subjects = [f"user-{i}" for i in range(1000)]
    first = {s: assign("exp", ARMS, s).name for s in subjects}
    counts = Counter(first.values())
    assert abs(counts["a"] - 500) <= 50 and abs(counts["b"] - 500) <= 50
    assert all(assign("exp", ARMS, s).name == arm for s, arm in first.items())


def test_weights_set_the_split() -> None:
    arms = [Arm(name="big", weight=3), Arm(name="small", weight=1)]
    counts = Counter(assign("w", arms, f"s{i}").name for i in range(4000))
    assert abs(counts["big"] / 4000 - 0.75) < 0.03


def test_different_experiments_split_independently() -> None:
    same = sum(
        assign("x", ARMS, f"s{i}").name == assign("y", ARMS, f"s{i}").name for i in range(2000)
    )
    assert 850 < same < 1150


def test_an_experiment_applies_only_to_its_tasks() -> None:
    experiments = Experiments({"e": Experiment(tasks=["creative"], arms=ARMS)})
    assert experiments.for_request("factual", "s") is None
    assignment = experiments.for_request("creative", "s")
    assert assignment is not None and assignment.label.startswith("e/")


def test_an_experiment_needs_two_distinct_arms() -> None:
    with pytest.raises(ValueError, match="two arms"):
        Experiment(arms=[Arm(name="a"), Arm(name="a")])


def test_student_t_matches_tables() -> None:
    assert t_quantile(0.975, 10) == pytest.approx(2.228, abs=1e-3)
    assert t_quantile(0.975, 1000) == pytest.approx(1.962, abs=1e-3)
    assert t_two_sided_p(2.228, 10) == pytest.approx(0.05, abs=1e-3)


def test_welch_t_test_matches_a_worked_example() -> None:
    # The worked example of Wikipedia's "Welch's t-test" article: t = -2.46, df ≈ 24.9, p = 0.021.
    a = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    b = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    t, p = welch(a, b)  # type: ignore[misc]
    assert t == pytest.approx(-2.46, abs=0.01)
    assert p == pytest.approx(0.021, abs=0.002)


def write_jsonl(path: Path, lines: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_the_report_computes_means_from_recorded_feedback(tmp_path: Path) -> None:
    audit = [
        {
            "request_id": f"r{i}",
            "arm": f"exp/{'a' if i % 2 else 'b'}",
            "status": "OK",
            "latency_ms": 100 + i,
            "completion_tokens": 10,
        }
        for i in range(10)
    ] + [{"request_id": "other", "arm": "other/a", "status": "OK", "latency_ms": 1}]
    feedback = [
        {"request_id": f"r{i}", "arm": "exp/a", "rating": r} for i, r in enumerate([5, 4, 5, 3, 5])
    ]
    feedback += [
        {"request_id": f"s{i}", "arm": "exp/b", "rating": r} for i, r in enumerate([2, 3, 2, 1, 2])
    ]
    write_jsonl(tmp_path / "audit" / "audit-2026-11-25.jsonl", audit)
    write_jsonl(tmp_path / "feedback" / "feedback-2026-11-25.jsonl", feedback)
    stats = report("exp", tmp_path)
    assert set(stats) == {"a", "b"}
    assert stats["a"].requests == 5 and stats["b"].requests == 5
    assert stats["a"].mean_rating() == pytest.approx(4.4)
    assert stats["b"].mean_rating() == pytest.approx(2.0)
    low, high = stats["a"].rating_ci95()  # type: ignore[misc]
    assert low < 4.4 < high
    text = render_report("exp", stats)
    assert "4.40" in text and "2.00" in text and "significant at 5%" in text
