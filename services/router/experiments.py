"""A/B experiments: arms with parameter sets or models, a traffic split, sticky by
subject, and the report that compares the arms.

A subject's arm is a pure function of the experiment's name and the subject
(SHA-256 → a point in [0, 1) → the arm whose cumulative weight covers it), so it
never changes while the arms do not, needs no storage, and every router replica
agrees. The report reads the audit log (requests, latency, tokens per arm) and the
feedback log (ratings), and compares the arms' mean ratings with Welch's t-test.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from headrace.services.router.tasks import PresetParams
from headrace.services.runtime.logs import get_logger

log = get_logger(__name__)


class Arm(BaseModel):
    """One variant: parameters and/or a model, and its share of the traffic."""

    name: str = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0)
    params: PresetParams = PresetParams()
    model: str = ""


class Experiment(BaseModel):
    """Arms compared on the requests of some tasks (all tasks when empty)."""

    description: str = ""
    tasks: list[str] = []
    arms: list[Arm]

    @model_validator(mode="after")
    def _two_distinct_arms(self) -> Experiment:
        names = [arm.name for arm in self.arms]
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError("an experiment needs at least two arms with distinct names")
        return self


def assign(experiment: str, arms: list[Arm], subject: str) -> Arm:
    """The subject's arm: sticky, uniform over subjects, proportional to the weights."""
    digest = hashlib.sha256(f"{experiment}\x00{subject}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    total = sum(arm.weight for arm in arms)
    cumulative = 0.0
    for arm in arms:
        cumulative += arm.weight / total
        if point < cumulative:
            return arm
    return arms[-1]


@dataclass(frozen=True)
class Assignment:
    experiment: str
    arm: Arm

    @property
    def label(self) -> str:
        return f"{self.experiment}/{self.arm.name}"


class Experiments:
    """The experiments in settings, plus those in `<home>/experiments.d/*.json` (one
    experiment per file, named by the file; `headrace finetune --experiment` writes
    them), re-read at most every `refresh` seconds so a running router picks them up.
    The first (by name) whose tasks match applies; settings win a name clash."""

    def __init__(
        self,
        experiments: dict[str, Experiment],
        directory: Path | None = None,
        refresh: float = 1.0,
    ) -> None:
        self._configured = experiments
        self._directory = directory
        self._refresh = refresh
        self._checked = -math.inf
        self._stamp: tuple[tuple[str, float], ...] = ()
        self._experiments = dict(sorted(experiments.items()))

    def _reload(self) -> None:
        now = time.monotonic()
        if self._directory is None or now - self._checked < self._refresh:
            return
        self._checked = now
        files = sorted(self._directory.glob("*.json")) if self._directory.is_dir() else []
        stamp = tuple((f.name, f.stat().st_mtime) for f in files if f.exists())
        if stamp == self._stamp:
            return
        self._stamp = stamp
        found: dict[str, Experiment] = {}
        for file in files:
            try:
                found[file.stem] = Experiment.model_validate_json(file.read_text("utf-8"))
            except (OSError, ValueError) as exc:
                log.warning("experiment_file_skipped", file=str(file), error=str(exc))
        self._experiments = dict(sorted({**found, **self._configured}.items()))

    def for_request(self, task: str, subject: str) -> Assignment | None:
        self._reload()
        for name, experiment in self._experiments.items():
            if not experiment.tasks or task in experiment.tasks:
                return Assignment(name, assign(name, experiment.arms, subject))
        return None


# ---- the report ---------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta function (Lentz's method)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for numerator in (
            m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-12:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df degrees of freedom."""
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """The t value with P(T <= t) = p (bisection on the CDF)."""
    lo, hi = 0.0, 1000.0
    target = 2 * (1 - p)  # two-sided tail mass for the positive quantile
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_two_sided_p(mid, df) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass
class ArmStats:
    """What the report says about one arm."""

    arm: str
    requests: int = 0
    latency_ms: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    ratings: list[float] = field(default_factory=list)

    def mean_rating(self) -> float | None:
        return sum(self.ratings) / len(self.ratings) if self.ratings else None

    def rating_ci95(self) -> tuple[float, float] | None:
        n = len(self.ratings)
        if n < 2:
            return None
        mean = sum(self.ratings) / n
        var = sum((r - mean) ** 2 for r in self.ratings) / (n - 1)
        half = t_quantile(0.975, n - 1) * math.sqrt(var / n)
        return mean - half, mean + half


def welch(a: list[float], b: list[float]) -> tuple[float, float] | None:
    """Welch's t statistic and two-sided p-value for the means of a and b."""
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1) / len(a)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1) / len(b)
    if va + vb == 0:
        return (0.0, 1.0) if ma == mb else (math.inf, 0.0)
    t = (ma - mb) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return t, t_two_sided_p(t, df)


def _lines(paths: Iterable[Path]) -> Iterable[dict[str, object]]:
    for path in sorted(paths):
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        continue


def report(experiment: str, home: Path) -> dict[str, ArmStats]:
    """Per-arm requests, latency, tokens (audit log) and ratings (feedback log)."""
    prefix = f"{experiment}/"
    stats: dict[str, ArmStats] = {}
    for line in _lines((home / "audit").glob("audit-*.jsonl")):
        label = line.get("arm") or ""
        if not isinstance(label, str) or not label.startswith(prefix):
            continue
        arm = stats.setdefault(label[len(prefix) :], ArmStats(label[len(prefix) :]))
        arm.requests += 1
        if line.get("status") == "OK":
            arm.latency_ms.append(float(line.get("latency_ms", 0.0)))  # type: ignore[arg-type]
            arm.tokens.append(int(line.get("completion_tokens", 0)))  # type: ignore[arg-type]
    for line in _lines((home / "feedback").glob("feedback-*.jsonl")):
        label = line.get("arm") or ""
        if isinstance(label, str) and label.startswith(prefix):
            name = label[len(prefix) :]
            stats.setdefault(name, ArmStats(name)).ratings.append(float(line["rating"]))  # type: ignore[arg-type]
    return dict(sorted(stats.items()))


def render_report(experiment: str, stats: dict[str, ArmStats]) -> str:
    """The report as text a person reads."""
    if not stats:
        return f"no requests recorded for experiment {experiment!r}"
    lines = [
        f"experiment {experiment}",
        f"{'arm':<16}{'requests':>9}{'ratings':>9}{'mean':>7}{'95% CI':>17}"
        f"{'p50 ms':>9}{'tokens':>8}",
    ]
    for arm in stats.values():
        mean = arm.mean_rating()
        ci = arm.rating_ci95()
        latency = sorted(arm.latency_ms)
        lines.append(
            f"{arm.arm:<16}{arm.requests:>9}{len(arm.ratings):>9}"
            f"{(f'{mean:.2f}' if mean is not None else '-'):>7}"
            f"{(f'[{ci[0]:.2f}, {ci[1]:.2f}]' if ci else '-'):>17}"
            f"{(f'{latency[len(latency) // 2]:.0f}' if latency else '-'):>9}"
            f"{(f'{sum(arm.tokens) / len(arm.tokens):.1f}' if arm.tokens else '-'):>8}"
        )
    arms = list(stats.values())
    if len(arms) >= 2:
        test = welch(arms[0].ratings, arms[1].ratings)
        if test is not None:
            t, p = test
            verdict = "significant at 5%" if p < 0.05 else "not significant at 5%"
            lines.append(
                f"Welch's t-test {arms[0].arm} vs {arms[1].arm}: t = {t:.3f}, p = {p:.4f} ({verdict})"
            )
        else:
            lines.append("Welch's t-test: needs at least two ratings per arm")
    return "\n".join(lines)
