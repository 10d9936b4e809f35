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
from pathlib import Path

import numpy as np

from headrace.services.sanitizer.classifier import ARTEFACT, InjectionClassifier, features

ROOT = Path(__file__).resolve().parents[1]
BITS = 18
L2 = 1e-5
STEPS = 300
LEARNING_RATE = 0.05
FOLDS = 3
SEED = 21
NORM_FLOOR = 200
"""Feature sums are divided by sqrt(max(n, NORM_FLOOR)): about 50 characters."""
TARGET_FALSE_POSITIVES = 0.005
"""The block threshold lets through all but this share of out-of-fold benign prompts."""


class Matrix:
    """Rows of hashed feature indices, each row's values 1/sqrt(max(n, floor))
    (classifier.margin)."""

    def __init__(self, texts: list[str], bits: int) -> None:
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


def fit(x: Matrix, y: np.ndarray, sample_weight: np.ndarray) -> tuple[np.ndarray, float]:
    """Full-batch Adam on the weighted logistic loss + L2; returns (weights, bias)."""
    w = np.zeros(x.dim)
    b = 0.0
    m_w, v_w = np.zeros(x.dim), np.zeros(x.dim)
    m_b = v_b = 0.0
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    total = sample_weight.sum()
    for step in range(1, STEPS + 1):
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


def balanced(y: np.ndarray) -> np.ndarray:
    """Each class weighs the same in the loss."""
    pos = y.mean()
    return np.where(y == 1, 0.5 / pos, 0.5 / (1 - pos))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".headrace" / "sanitizer-data")
    parser.add_argument("--out", type=Path, default=ARTEFACT)
    args = parser.parse_args()
    with gzip.open(args.data / "train.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    texts = [r["text"] for r in rows]
    y = np.array([int(r["label"]) for r in rows], dtype=float)
    x = Matrix(texts, BITS)

    # Out-of-fold scores choose the threshold: scores on training rows themselves
    # are optimistic.
    order = np.random.default_rng(SEED).permutation(len(rows))
    folds = np.array_split(order, FOLDS)
    oof = np.zeros(len(rows))
    for k, test in enumerate(folds):
        print(f"fold {k + 1} of {FOLDS}", flush=True)
        train = np.concatenate([f for j, f in enumerate(folds) if j != k])
        w, b = fit(x.take(np.sort(train)), y[np.sort(train)], balanced(y[np.sort(train)]))
        part = x.take(np.sort(test))
        oof[np.sort(test)] = 1.0 / (1.0 + np.exp(-(part.dot(w) + b)))
    benign = np.sort(oof[y == 0])
    threshold = float(benign[int(np.ceil((1 - TARGET_FALSE_POSITIVES) * len(benign))) - 1])
    threshold = round(min(0.95, max(0.5, threshold + 1e-3)), 3)
    recall = float((oof[y == 1] >= threshold).mean())
    fp = float((oof[y == 0] >= threshold).mean())
    print(
        f"out-of-fold: threshold {threshold}, attacks caught {recall:.1%}, benign {fp:.2%}",
        flush=True,
    )

    print("the final fit, on every training row", flush=True)
    w, b = fit(x, y, balanced(y))
    model = InjectionClassifier(
        w.astype(np.float32),
        float(b),
        BITS,
        {
            "threshold": threshold,
            "norm_floor": NORM_FLOOR,
            "trained_on": len(rows),
            "sources": sorted({r["source"] for r in rows}),
            "out_of_fold": {"attacks_caught": round(recall, 4), "benign_flagged": round(fp, 4)},
        },
    )
    model.save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
