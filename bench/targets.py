"""Issue 22's targets for `make bench`, checked against measured figures.

Pure functions (no model, no network) so the table's arithmetic and wording are
unit-tested: tests/ops/test_bench_targets.py. bench/user_view.py measures the
figures and prints `target_table(...)`.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# The margins ("What it must show").
FIRST_TEXT_MARGIN_MS = 10.0
DECODE_RATIO_MIN = 0.97
BATCHED_FRACTION_MIN = 0.95
ENGINE_FIRST_TOKEN_MARGIN_MS = 3.0
VS_LLAMA_SERVER_DECODE_MIN = 0.98


def median(values: Iterable[float]) -> float:
    """The median, NaN for no values (a side that was not measured)."""
    data = [v for v in values if v == v]  # NaN never equals itself
    return statistics.median(data) if data else float("nan")


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(lower quartile, median, upper quartile) of the values, NaN when empty: the
    middle half of per-pair differences, so a reader can tell a margin from noise."""
    data = sorted(v for v in values if v == v)
    if not data:
        nan = float("nan")
        return nan, nan, nan
    return data[len(data) // 4], statistics.median(data), data[(3 * len(data)) // 4]


def decode_tps(first_s: float, last_s: float, tokens: int) -> float:
    """Tokens per second between the first and the last visible text of one stream:
    `tokens - 1` intervals, 0 when there is nothing to divide."""
    return (tokens - 1) / (last_s - first_s) if tokens > 1 and last_s > first_s else 0.0


def order_for_round(sides: Sequence[str], i: int) -> list[str]:
    """The order in which round `i` visits the sides: rotated by one each round, and
    every other block of len(sides) rounds reversed, so over 2 * len(sides) rounds each
    side goes first equally often and each goes before each other equally often (with
    two sides: a b, b a, b a, a b)."""
    n = len(sides)
    k = i % n
    order = list(sides[k:]) + list(sides[:k])
    return order[::-1] if (i // n) % 2 else order


@dataclass(frozen=True)
class Figures:
    """Medians measured in one run; None where a side was not measured (a peer
    absent on this machine)."""

    in_process_first_ms: float
    gateway_first_ms: float
    in_process_tps: float
    gateway_tps: float
    gateway_4_tps: float
    batched_limit_tps: float
    engine_first_ms: float
    engine_pair_in_process_first_ms: float
    py_server_first_ms: float | None = None
    py_server_4_tps: float | None = None
    llama_server_first_ms: float | None = None
    llama_server_tps: float | None = None
    llama_server_4_tps: float | None = None
    # The same comparisons taken round by round (each round sends the same prompt to
    # both sides, back to back): empty where not measured. Their middle half shows
    # how far a run's noise reaches, which a ratio of two medians hides.
    first_gap_rounds: Sequence[float] = ()
    decode_ratio_rounds: Sequence[float] = ()
    four_fraction_runs: Sequence[float] = ()
    engine_gap_pairs: Sequence[float] = ()
    vs_llama_server_rounds: Sequence[float] = ()


def gaps(base: Sequence[float], other: Sequence[float]) -> list[float]:
    """Round-by-round differences `other - base` of two sides measured in the same rounds."""
    return [b - a for a, b in zip(base, other, strict=True)]


def paired(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Round-by-round ratios of two sides measured in the same rounds (a round where
    either side measured nothing, or the denominator is 0, is left out)."""
    return [
        a / b
        for a, b in zip(numerators, denominators, strict=True)
        if a == a and b == b and b  # NaN never equals itself
    ]


@dataclass(frozen=True)
class Target:
    """One line of the table: what is compared, the figure, the goal, the verdict."""

    name: str
    measured: str
    goal: str
    met: bool | None  # None: not measured
    within_noise: bool = False
    """The goal lies inside the middle half of the per-round figures: the verdict could
    go either way in another run."""

    @property
    def verdict(self) -> str:
        if self.met is None:
            return "not measured"
        word = "met" if self.met else "not met"
        return f"{word} (goal within the per-round middle half)" if self.within_noise else word


def _per_round(
    values: Sequence[float], goal: float, digits: int, unit: str = ""
) -> tuple[str, bool]:
    """The text "; per round M (middle half L to H)" and whether `goal` lies
    inside [L, H]; nothing when there are fewer than 4 rounds."""
    data = [v for v in values if v == v]
    if len(data) < 4:
        return "", False
    low, mid, high = spread(data)
    sign = "+" if unit == " ms" else ""
    text = (
        f"; per round {mid:{sign}.{digits}f}{unit} "
        f"(middle half {low:{sign}.{digits}f} to {high:{sign}.{digits}f})"
    )
    return text, low <= goal <= high


def _finite(*values: float | None) -> bool:
    return all(v is not None and v == v for v in values)


def targets(f: Figures) -> list[Target]:
    """Issue 22's targets, each checked against the figures."""
    out: list[Target] = []
    gap = f.gateway_first_ms - f.in_process_first_ms
    rounds, noise = _per_round(f.first_gap_rounds, FIRST_TEXT_MARGIN_MS, 1, " ms")
    out.append(
        Target(
            "first visible text, gateway vs in-process",
            f"{f.gateway_first_ms:.1f} vs {f.in_process_first_ms:.1f} ms ({gap:+.1f} ms)" + rounds,
            f"≤ +{FIRST_TEXT_MARGIN_MS:.0f} ms",
            gap <= FIRST_TEXT_MARGIN_MS if _finite(gap) else None,
            noise,
        )
    )
    ratio = f.gateway_tps / f.in_process_tps if f.in_process_tps else float("nan")
    rounds, noise = _per_round(f.decode_ratio_rounds, DECODE_RATIO_MIN, 3)
    out.append(
        Target(
            "decode 1 stream, gateway / in-process",
            f"{f.gateway_tps:.1f} / {f.in_process_tps:.1f} tok/s = {ratio:.3f}" + rounds,
            f"≥ {DECODE_RATIO_MIN}",
            ratio >= DECODE_RATIO_MIN if _finite(ratio) else None,
            noise,
        )
    )
    fraction = f.gateway_4_tps / f.batched_limit_tps if f.batched_limit_tps else float("nan")
    rounds, noise = _per_round(f.four_fraction_runs, BATCHED_FRACTION_MIN, 3)
    out.append(
        Target(
            "4 streams, gateway / batched limit",
            f"{f.gateway_4_tps:.1f} / {f.batched_limit_tps:.1f} tok/s = {fraction:.3f}" + rounds,
            f"≥ {BATCHED_FRACTION_MIN}",
            fraction >= BATCHED_FRACTION_MIN if _finite(fraction) else None,
            noise,
        )
    )
    engine_gap = f.engine_first_ms - f.engine_pair_in_process_first_ms
    rounds, noise = _per_round(f.engine_gap_pairs, ENGINE_FIRST_TOKEN_MARGIN_MS, 1, " ms")
    out.append(
        Target(
            "engine first token vs in-process",
            f"{f.engine_first_ms:.1f} vs {f.engine_pair_in_process_first_ms:.1f} ms "
            f"({engine_gap:+.1f} ms)" + rounds,
            f"≤ +{ENGINE_FIRST_TOKEN_MARGIN_MS:.0f} ms",
            engine_gap <= ENGINE_FIRST_TOKEN_MARGIN_MS if _finite(engine_gap) else None,
            noise,
        )
    )
    for peer, first, four in (
        ("llama_cpp.server", f.py_server_first_ms, f.py_server_4_tps),
        ("llama-server", f.llama_server_first_ms, f.llama_server_4_tps),
    ):
        out.append(
            Target(
                f"first visible text ahead of {peer}",
                f"{f.gateway_first_ms:.1f} vs {first:.1f} ms"
                if _finite(first, f.gateway_first_ms)
                else "peer not run"
                if first is None
                else "no first-text rounds",
                "gateway lower",
                f.gateway_first_ms < first  # type: ignore[operator]
                if _finite(first, f.gateway_first_ms)
                else None,
            )
        )
        out.append(
            Target(
                f"4 streams ahead of {peer}",
                f"{f.gateway_4_tps:.1f} vs {four:.1f} tok/s" if _finite(four) else "peer not run",
                "gateway higher",
                f.gateway_4_tps > four if _finite(four) else None,  # type: ignore[operator]
            )
        )
    vs = (
        f.gateway_tps / f.llama_server_tps
        if _finite(f.llama_server_tps) and f.llama_server_tps
        else None
    )
    rounds, noise = _per_round(f.vs_llama_server_rounds, VS_LLAMA_SERVER_DECODE_MIN, 3)
    out.append(
        Target(
            "decode 1 stream, gateway / llama-server",
            f"{f.gateway_tps:.1f} / {f.llama_server_tps:.1f} tok/s = {vs:.3f}" + rounds
            if vs is not None
            else "peer not run",
            f"≥ {VS_LLAMA_SERVER_DECODE_MIN}",
            vs >= VS_LLAMA_SERVER_DECODE_MIN if vs is not None else None,
            noise and vs is not None,
        )
    )
    return out


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A GitHub markdown table's lines; every row must have one cell per header."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, headers {len(headers)}")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def target_table(f: Figures) -> list[str]:
    """The targets as a markdown table with met / not met per line."""
    return markdown_table(
        ["target (issue 22)", "measured (medians)", "goal", "verdict"],
        ([t.name, t.measured, t.goal, t.verdict] for t in targets(f)),
    )


def fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    """A figure for a table cell; a dash where it was not measured."""
    if value is None or value != value:
        return "–"
    return f"{value:.{digits}f}{unit}"


def sides_table(
    sides: Sequence[str],
    first_ms: Mapping[str, Sequence[float]],
    long_first_ms: Mapping[str, Sequence[float]],
    tps: Mapping[str, Sequence[float]],
    four_tps: Mapping[str, Sequence[float]],
    *,
    max_tokens: int,
    streams: int,
    baseline: str = "in-process",
) -> list[str]:
    """Every side's medians as a markdown table. `first_ms[side][i]` is round i's
    first visible text (the same prompt on every side), so the gap to `baseline` is
    taken per prompt; a side missing from a mapping shows a dash."""
    rows = []
    for name in sides:
        if first_ms.get(name) and name != baseline:
            low, mid, high = spread(gaps(first_ms[baseline], first_ms[name]))
            gap = f"{mid:+.1f} ({low:+.1f} to {high:+.1f})"
        else:
            gap = "–"
        rows.append(
            [
                name,
                fmt(median(first_ms.get(name, ())), " ms"),
                gap,
                fmt(median(long_first_ms.get(name, ())), " ms"),
                fmt(median(tps.get(name, ()))),
                fmt(median(four_tps.get(name, ()))),
            ]
        )

    def count(values: Mapping[str, Sequence[float]]) -> int:
        return max((len(v) for v in values.values()), default=0)

    return markdown_table(
        [
            "side",
            f"first visible text, median of {count(first_ms)}",
            "per-prompt gap to in-process, ms: median (middle half)",
            f"first visible text in the {max_tokens}-token rounds, median",
            f"decode tok/s, 1 stream, median of {count(tps)}",
            f"aggregate tok/s, {streams} streams, median of {count(four_tps)}",
        ],
        rows,
    )
