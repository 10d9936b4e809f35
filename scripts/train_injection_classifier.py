"""Train the sanitizer's injection classifier from the training split.

    python scripts/train_injection_classifier.py [--data DIR] [--out PATH]

Reads train.jsonl.gz written by scripts/sanitizer_data.py (the evaluation split
is never read here), fits a class-balanced, L2-regularised logistic regression
over classifier.features() with full-batch Adam in numpy (no scikit-learn),
picks the default block threshold from out-of-fold scores, and writes the model
to services/sanitizer/data/injection_classifier.npz. The same data, seed and
code give the same weights.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from headrace.services.sanitizer.classifier import (
    ARTEFACT,
    InjectionClassifier,
    _bytes,
    features,
    features_at,
    window_spans,
)

ROOT = Path(__file__).resolve().parents[1]
BITS = 18
L2 = 1e-5
STEPS = 300
LEARNING_RATE = 0.05
FOLDS = 3
SEED = 21
NORM_FLOOR = 200
"""Feature sums are divided by sqrt(max(n, NORM_FLOOR)): about 50 characters."""
TARGET_FALSE_POSITIVES = 0.01
"""The block threshold lets through all but this share of the out-of-fold benign prompts
of *each* benign training source (the goal is per benign family, not on average)."""
HARD_NEGATIVES = {
    "gpteacher.roleplay": 2.0,
    "xstest": 2.0,
    "awesome_chatgpt_prompts": 2.0,
    "tldr": 2.0,
}
"""Benign sources that look most like attacks (role-play set-ups, unsafe-sounding words)
weigh this much more than other benign rows; the benign class keeps its total weight."""
WINDOW = (256, 128)
"""--window: the (size, stride) in bytes of the windows scored beside the whole prompt."""
MAX_WINDOWS = 8
"""Training windows taken from one row at most (evenly spread over it)."""


class Matrix:
    """Rows of hashed feature indices, each row's values 1/sqrt(max(n, floor))
    (classifier.margin)."""

    def __init__(self, texts: list[str], bits: int, rows: list[np.ndarray] | None = None) -> None:
        if rows is None:
            rows = [features(t, bits) for t in texts]
        self.lengths = np.array([max(1, len(r)) for r in rows])
        self.index = np.concatenate(rows)
        self.row = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
        self.value = (1.0 / np.sqrt(np.maximum(self.lengths, NORM_FLOOR)))[self.row]
        self.n = len(rows)
        self.dim = 1 << bits

    def take(self, rows: np.ndarray) -> Matrix:
        keep = np.isin(self.row, rows)
        out = object.__new__(Matrix)
        remap = np.full(self.n, -1)
        remap[rows] = np.arange(len(rows))
        out.index, out.value = self.index[keep], self.value[keep]
        out.row = remap[self.row[keep]]
        out.lengths, out.n, out.dim = self.lengths[rows], len(rows), self.dim
        return out

    def dot(self, w: np.ndarray) -> np.ndarray:
        return np.bincount(self.row, weights=w[self.index] * self.value, minlength=self.n)

    def grad(self, err: np.ndarray) -> np.ndarray:
        return np.bincount(self.index, weights=err[self.row] * self.value, minlength=self.dim)


def fit(
    x: Matrix, y: np.ndarray, sample_weight: np.ndarray, steps: int = STEPS
) -> tuple[np.ndarray, float]:
    """Full-batch Adam on the weighted logistic loss + L2; returns (weights, bias)."""
    w = np.zeros(x.dim)
    b = 0.0
    m_w, v_w = np.zeros(x.dim), np.zeros(x.dim)
    m_b = v_b = 0.0
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    total = sample_weight.sum()
    for step in range(1, steps + 1):
        z = x.dot(w) + b
        p = 1.0 / (1.0 + np.exp(-z))
        err = (p - y) * sample_weight / total
        g_w = x.grad(err) + L2 * w
        g_b = float(err.sum())
        m_w = beta1 * m_w + (1 - beta1) * g_w
        v_w = beta2 * v_w + (1 - beta2) * g_w * g_w
        m_b = beta1 * m_b + (1 - beta1) * g_b
        v_b = beta2 * v_b + (1 - beta2) * g_b * g_b
        lr = LEARNING_RATE * np.sqrt(1 - beta2**step) / (1 - beta1**step)
        w -= lr * m_w / (np.sqrt(v_w) + eps)
        b -= lr * m_b / (np.sqrt(v_b) + eps)
    return w, b


def balanced(y: np.ndarray, hard: np.ndarray) -> np.ndarray:
    """Each class weighs the same in the loss; within the benign class, hard negatives
    weigh `hard` times an ordinary row."""
    w = np.where(y == 1, 1.0, hard)
    pos, neg = w[y == 1].sum(), w[y == 0].sum()
    return np.where(y == 1, w * 0.5 * len(y) / pos, w * 0.5 * len(y) / neg)


def choose_threshold(oof: np.ndarray, y: np.ndarray, sources: np.ndarray) -> float:
    """The least threshold under which every benign source keeps its out-of-fold false
    positives at TARGET_FALSE_POSITIVES or fewer."""
    worst = 0.0
    for source in sorted(set(sources[y == 0])):
        benign = np.sort(oof[(y == 0) & (sources == source)])
        k = int(np.ceil((1 - TARGET_FALSE_POSITIVES) * len(benign))) - 1
        worst = max(worst, float(benign[k]))
    return round(min(0.97, max(0.5, worst + 1e-3)), 3)


def attack_start(text: str, attacks: list[str]) -> int | None:
    """Where (in normalised bytes) the injection appended to a headrace.embedded task
    starts: the row ends with one of the training injections, as is or upper-cased."""
    best = None
    for attack in attacks:
        if text.endswith(attack) or text.endswith(attack.upper()):
            if best is None or len(attack) > len(best):
                best = attack
    if best is None:
        return None
    return max(0, len(_bytes(text)) - len(_bytes(best)))


def windows(
    rows: list[dict[str, object]], bits: int, window: tuple[int, int]
) -> tuple[list[np.ndarray], list[int], list[int]]:
    """Training windows: (feature rows, labels, the row each came from).

    A benign row's windows are benign. Of an embedded attack (a benign task, then
    an injection) the windows that hold the whole injection or lie inside it are
    attacks, those wholly in the task are benign, and those that cut the injection
    are left out; other attacks give no windows (where the attack is in them is
    not known), only their whole text."""
    size, stride = window
    attacks = sorted(
        {
            str(r["text"])
            for r in rows
            if r["family"] == "injection" and int(r["label"]) == 1  # type: ignore[call-overload]
        }
    )
    feats: list[np.ndarray] = []
    labels: list[int] = []
    parent: list[int] = []
    for i, r in enumerate(rows):
        label = int(r["label"])  # type: ignore[call-overload]
        start = None
        if label == 1:
            if r["source"] != "headrace.embedded":
                continue
            start = attack_start(str(r["text"]), attacks)
            if start is None:
                continue
        index, pos, n = features_at(str(r["text"]), bits)
        spans = window_spans(n, size, stride)
        if len(spans) > MAX_WINDOWS:
            spans = spans[
                np.unique(np.linspace(0, len(spans) - 1, MAX_WINDOWS).round().astype(int))
            ]
        for s, e in spans:
            if start is None:
                wl = 0
            elif e <= start:
                wl = 0
            elif s >= start or (s <= start and e >= n):
                wl = 1
            else:
                continue
            feats.append(index[(pos >= s) & (pos < e)])
            labels.append(wl)
            parent.append(i)
    return feats, labels, parent


def train(
    rows: list[dict[str, object]],
    *,
    bits: int = BITS,
    steps: int = STEPS,
    log: Callable[[str], object] = print,
    oof_out: Path | None = None,
    window: tuple[int, int] | None = None,
) -> InjectionClassifier:
    """The model for these training rows: out-of-fold scores choose the threshold,
    then the final fit uses every row. Deterministic: the same rows give the same model.

    With a window, the model scores a prompt as the highest of its whole text and its
    windows (classifier.InjectionClassifier.margin), and is trained on the same: each
    row's whole text and its windows (windows()); the out-of-fold scores that choose
    the threshold are computed the way the sanitizer computes them."""
    if window is not None:
        return _train_windowed(
            rows, bits=bits, steps=steps, log=log, oof_out=oof_out, window=window
        )
    texts = [str(r["text"]) for r in rows]
    y = np.array([int(r["label"]) for r in rows], dtype=float)  # type: ignore[call-overload]
    sources = np.array([str(r["source"]) for r in rows])
    hard = np.array([HARD_NEGATIVES.get(str(r["source"]), 1.0) for r in rows])
    x = Matrix(texts, bits)

    # Out-of-fold scores choose the threshold: scores on training rows themselves
    # are optimistic.
    order = np.random.default_rng(SEED).permutation(len(rows))
    folds = np.array_split(order, FOLDS)
    oof = np.zeros(len(rows))
    for k, test in enumerate(folds):
        log(f"fold {k + 1} of {FOLDS}")
        fold_train = np.sort(np.concatenate([f for j, f in enumerate(folds) if j != k]))
        w, b = fit(
            x.take(fold_train), y[fold_train], balanced(y[fold_train], hard[fold_train]), steps
        )
        part = x.take(np.sort(test))
        oof[np.sort(test)] = 1.0 / (1.0 + np.exp(-(part.dot(w) + b)))
    return _final(x, y, hard, steps, bits, log, oof_out, oof, y, sources, window=None)


def _final(
    x: Matrix,
    y: np.ndarray,
    hard: np.ndarray,
    steps: int,
    bits: int,
    log: Callable[[str], object],
    oof_out: Path | None,
    oof: np.ndarray,
    y_rows: np.ndarray,
    sources: np.ndarray,
    window: dict[str, int] | None,
) -> InjectionClassifier:
    """The threshold from the rows' out-of-fold scores (reported per source), then
    the fit on everything (x, y, hard: rows, and windows where there are any)."""
    if oof_out is not None:
        np.savez(oof_out, oof=oof, y=y_rows, sources=sources)
    threshold = choose_threshold(oof, y_rows, sources)
    for source in sorted(set(sources)):
        for label in (0, 1):
            mine = (sources == source) & (y_rows == label)
            if mine.any():
                log(
                    f"  {source:26} label {label} {int(mine.sum()):5} rows, out-of-fold over "
                    f"threshold: {(oof[mine] >= threshold).mean():.1%}"
                )
    recall = float((oof[y_rows == 1] >= threshold).mean())
    fp = float((oof[y_rows == 0] >= threshold).mean())
    log(f"out-of-fold: threshold {threshold}, attacks caught {recall:.1%}, benign {fp:.2%}")

    log(f"the final fit, on every training row{' and window' if window else ''}")
    w, b = fit(x, y, balanced(y, hard), steps)
    meta: dict[str, object] = {"threshold": threshold, "norm_floor": NORM_FLOOR}
    if window is not None:
        meta["window"] = window
    meta["trained_on"] = len(y_rows)
    meta["sources"] = sorted(set(sources.tolist()))
    meta["out_of_fold"] = {"attacks_caught": round(recall, 4), "benign_flagged": round(fp, 4)}
    return InjectionClassifier(w.astype(np.float32), float(b), bits, meta)


def _train_windowed(
    rows: list[dict[str, object]],
    *,
    bits: int,
    steps: int,
    log: Callable[[str], object],
    oof_out: Path | None,
    window: tuple[int, int],
) -> InjectionClassifier:
    texts = [str(r["text"]) for r in rows]
    y_rows = np.array([int(r["label"]) for r in rows], dtype=float)  # type: ignore[call-overload]
    sources = np.array([str(r["source"]) for r in rows])
    hard_rows = np.array([HARD_NEGATIVES.get(str(r["source"]), 1.0) for r in rows])
    whole = [features(t, bits) for t in texts]
    win, win_y, win_parent = windows(rows, bits, window)
    log(f"{len(win)} training windows ({sum(win_y)} attacks) beside {len(rows)} rows")
    parent = np.concatenate([np.arange(len(rows)), np.array(win_parent, dtype=int)])
    y = np.concatenate([y_rows, np.array(win_y, dtype=float)])
    # A row's windows weigh as much together as the row itself: a long benign text
    # (a 100 KB role-play prompt) must not outweigh a source of short ones.
    per_row = np.bincount(np.array(win_parent, dtype=int), minlength=len(rows))
    share = np.concatenate([np.ones(len(rows)), 1.0 / per_row[np.array(win_parent, dtype=int)]])
    hard = hard_rows[parent] * share
    x = Matrix([], bits, rows=whole + win)
    meta_window = {"size": window[0], "stride": window[1]}

    def scorer(w: np.ndarray, b: float) -> InjectionClassifier:
        meta = {"norm_floor": NORM_FLOOR, "window": meta_window}
        return InjectionClassifier(w.astype(np.float32), float(b), bits, meta)

    order = np.random.default_rng(SEED).permutation(len(rows))
    folds = np.array_split(order, FOLDS)
    oof = np.zeros(len(rows))
    for k, test in enumerate(folds):
        log(f"fold {k + 1} of {FOLDS}")
        in_train = np.ones(len(rows), dtype=bool)
        in_train[test] = False
        fold_train = np.flatnonzero(in_train[parent])
        w, b = fit(
            x.take(fold_train), y[fold_train], balanced(y[fold_train], hard[fold_train]), steps
        )
        model = scorer(w, b)
        for i in np.sort(test):
            oof[i] = model.score(texts[i])
    return _final(x, y, hard, steps, bits, log, oof_out, oof, y_rows, sources, window=meta_window)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".headrace" / "sanitizer-data")
    parser.add_argument("--out", type=Path, default=ARTEFACT)
    parser.add_argument("--oof", type=Path, help="also write the out-of-fold scores here (.npz)")
    parser.add_argument(
        "--window",
        nargs="?",
        const=f"{WINDOW[0]},{WINDOW[1]}",
        metavar="SIZE,STRIDE",
        help=f"score (and train on) windows of SIZE bytes every STRIDE bytes (default "
        f"{WINDOW[0]},{WINDOW[1]}) beside the whole prompt, the highest score counting",
    )
    args = parser.parse_args()
    with gzip.open(args.data / "train.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    model = train(
        rows,
        log=lambda line: print(line, flush=True),
        oof_out=args.oof,
        window=tuple(int(v) for v in args.window.split(",")) if args.window else None,  # type: ignore[arg-type]
    )
    model.save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
