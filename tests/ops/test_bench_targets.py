"""`make bench`'s target table (bench/targets.py): arithmetic and wording, no model."""

from __future__ import annotations

import math

import pytest

from bench.targets import (
    Figures,
    decode_tps,
    fmt,
    markdown_table,
    median,
    order_for_round,
    paired,
    sides_table,
    spread,
    target_table,
    targets,
)


def figures(**over: float | None) -> Figures:
    base: dict[str, float | None] = dict(
        in_process_first_ms=25.0,
        gateway_first_ms=34.0,
        in_process_tps=46.0,
        gateway_tps=45.5,
        gateway_4_tps=120.0,
        batched_limit_tps=125.0,
        engine_first_ms=27.0,
        engine_pair_in_process_first_ms=25.0,
        py_server_first_ms=65.0,
        py_server_4_tps=25.0,
        llama_server_first_ms=45.0,
        llama_server_tps=46.0,
        llama_server_4_tps=105.0,
    )
    base.update(over)
    return Figures(**base)  # type: ignore[arg-type]


def by_name(f: Figures) -> dict[str, str]:
    return {t.name: t.verdict for t in targets(f)}


def test_median_ignores_nan_and_is_nan_for_nothing() -> None:
    assert median([3.0, float("nan"), 1.0, 2.0]) == 2.0
    assert math.isnan(median([]))


def test_spread_is_quartiles_and_median() -> None:
    assert spread([4.0, 1.0, 3.0, 2.0, 5.0]) == (2.0, 3.0, 4.0)
    assert all(math.isnan(v) for v in spread([]))


def test_decode_tps_counts_intervals_between_first_and_last_text() -> None:
    assert decode_tps(1.0, 2.0, 11) == 10.0
    assert decode_tps(1.0, 1.0, 5) == 0.0
    assert decode_tps(1.0, 2.0, 1) == 0.0


def test_every_target_met_by_good_figures() -> None:
    verdicts = by_name(figures())
    assert len(verdicts) == 9
    assert set(verdicts.values()) == {"met"}


@pytest.mark.parametrize(
    ("over", "name"),
    [
        ({"gateway_first_ms": 35.1}, "first visible text, gateway vs in-process"),
        ({"in_process_tps": 47.0}, "decode 1 stream, gateway / in-process"),
        ({"gateway_4_tps": 118.0}, "4 streams, gateway / batched limit"),
        ({"engine_first_ms": 28.5}, "engine first token vs in-process"),
        ({"llama_server_first_ms": 33.0}, "first visible text ahead of llama-server"),
        ({"py_server_4_tps": 121.0}, "4 streams ahead of llama_cpp.server"),
        ({"llama_server_tps": 46.5}, "decode 1 stream, gateway / llama-server"),
    ],
)
def test_a_figure_past_its_margin_is_not_met(over: dict[str, float], name: str) -> None:
    verdicts = by_name(figures(**over))
    assert verdicts[name] == "not met"
    assert [n for n, v in verdicts.items() if v != "met"] == [name]


def test_margins_are_inclusive() -> None:
    # exactly +10 ms, 0.95 of the limit and +3 ms meet their targets
    edge = figures(
        gateway_first_ms=35.0,
        gateway_4_tps=95.0,
        batched_limit_tps=100.0,
        py_server_4_tps=25.0,
        llama_server_4_tps=90.0,
        engine_first_ms=28.0,
    )
    assert set(by_name(edge).values()) == {"met"}
    # exactly 0.97 of in-process, exactly 0.98 of llama-server
    assert (
        by_name(figures(in_process_tps=100.0, gateway_tps=97.0, llama_server_tps=None))[
            "decode 1 stream, gateway / in-process"
        ]
        == "met"
    )
    assert (
        by_name(figures(gateway_tps=49.0, llama_server_tps=50.0))[
            "decode 1 stream, gateway / llama-server"
        ]
        == "met"
    )


def test_an_absent_peer_is_not_measured_not_failed() -> None:
    verdicts = by_name(
        figures(llama_server_first_ms=None, llama_server_tps=None, llama_server_4_tps=None)
    )
    assert verdicts["first visible text ahead of llama-server"] == "not measured"
    assert verdicts["4 streams ahead of llama-server"] == "not measured"
    assert verdicts["decode 1 stream, gateway / llama-server"] == "not measured"
    assert verdicts["4 streams ahead of llama_cpp.server"] == "met"


def test_target_table_is_markdown_with_a_verdict_per_line() -> None:
    lines = target_table(figures(gateway_first_ms=50.0, llama_server_4_tps=None))
    assert lines[0].startswith("| target (issue 22) |")
    assert lines[1] == "|---|---|---|---|"
    assert len(lines) == 2 + 9
    assert "| +25.0 ms)" not in lines[2]
    assert "(+25.0 ms)" in lines[2] and lines[2].endswith("| not met |")
    assert any(line.endswith("| not measured |") for line in lines)


def test_markdown_table_rejects_a_short_row() -> None:
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [["1"]])


def test_fmt_shows_a_dash_for_missing_figures() -> None:
    assert fmt(None) == "–"
    assert fmt(float("nan"), " ms") == "–"
    assert fmt(12.345, " ms") == "12.3 ms"


@pytest.mark.parametrize("sides", [["a", "b"], ["a", "b", "c"], ["a", "b", "c", "d"]])
def test_round_orders_balance_who_goes_first_and_who_follows(sides: list[str]) -> None:
    rounds = [order_for_round(sides, i) for i in range(2 * len(sides))]
    assert all(sorted(order) == sorted(sides) for order in rounds)
    firsts = [order[0] for order in rounds]
    assert all(firsts.count(s) == 2 for s in sides)
    for a in sides:
        for b in sides:
            if a != b:
                before = sum(order.index(a) < order.index(b) for order in rounds)
                assert before == len(rounds) // 2


def test_sides_table_takes_the_gap_per_prompt_and_dashes_what_a_side_lacks() -> None:
    lines = sides_table(
        ["in-process", "gateway", "batched limit"],
        {"in-process": [20.0, 30.0, 40.0], "gateway": [25.0, 41.0, 46.0]},
        {"in-process": [50.0], "gateway": [70.0]},
        {"in-process": [46.0, 47.0], "gateway": [45.0, 44.0]},
        {"gateway": [110.0, 120.0, 100.0], "batched limit": [125.0]},
        max_tokens=128,
        streams=4,
    )
    assert "median of 3" in lines[0] and "128-token rounds" in lines[0]
    assert lines[2] == "| in-process | 30.0 ms | – | 50.0 ms | 46.5 | – |"
    # per-prompt gaps +5, +11, +6: median +6, quartiles +5 and +11
    assert lines[3] == "| gateway | 41.0 ms | +6.0 (+5.0 to +11.0) | 70.0 ms | 44.5 | 110.0 |"
    assert lines[4] == "| batched limit | – | – | – | – | 125.0 |"
    # A run without first-text rounds (`--pairs 0`) shows dashes, not NaN gaps.
    empty = sides_table(
        ["in-process", "gateway"],
        {"in-process": [], "gateway": []},
        {"in-process": [50.0], "gateway": [70.0]},
        {"in-process": [46.0], "gateway": [45.0]},
        {"gateway": [110.0]},
        max_tokens=128,
        streams=4,
    )
    assert empty[3] == "| gateway | – | – | 70.0 ms | 45.0 | 110.0 |"


def test_paired_ratios_are_taken_round_by_round_and_skip_rounds_without_a_figure() -> None:
    nan = float("nan")
    assert paired([50.0, 45.0, nan, 40.0, 30.0], [50.0, 50.0, 48.0, 0.0, 40.0]) == [
        1.0,
        0.9,
        0.75,
    ]
    with pytest.raises(ValueError):
        paired([1.0], [1.0, 2.0])


def test_per_round_figures_show_their_middle_half_and_flag_a_goal_inside_it() -> None:
    name = "decode 1 stream, gateway / in-process"
    # The medians' ratio is 0.989 (met), but the rounds scatter around the goal.
    noisy = figures(decode_ratio_rounds=[0.93, 0.95, 0.99, 1.0, 1.01, 0.96, 0.98, 0.99])
    target = next(t for t in targets(noisy) if t.name == name)
    assert target.met and target.within_noise
    assert target.verdict == "met (goal within the per-round middle half)"
    assert "; per round 0.985 (middle half 0.960 to 1.000)" in target.measured
    # Rounds all clear of the goal: a plain verdict.
    steady = figures(decode_ratio_rounds=[0.99, 1.0, 0.995, 1.01, 0.99])
    assert by_name(steady)[name] == "met"
    # A gap in ms is signed, and its goal is a ceiling: +8..+14 straddles +10.
    gap = figures(first_gap_rounds=[6.0, 8.0, 9.0, 12.0, 14.0, 15.0, 9.5, 13.0])
    first = next(t for t in targets(gap) if t.name.startswith("first visible text, gateway"))
    assert "per round +10.8 ms (middle half +9.0 to +14.0)" in first.measured
    assert first.verdict == "met (goal within the per-round middle half)"
    # Fewer than 4 rounds say nothing about their spread.
    few = figures(four_fraction_runs=[0.9, 0.99, 1.0])
    four = next(t for t in targets(few) if t.name == "4 streams, gateway / batched limit")
    assert "per round" not in four.measured and four.verdict == "met"
    # An absent peer stays "not measured" whatever its rounds.
    absent = figures(llama_server_tps=None, vs_llama_server_rounds=[0.9, 1.0, 0.95, 0.99])
    assert by_name(absent)["decode 1 stream, gateway / llama-server"] == "not measured"
