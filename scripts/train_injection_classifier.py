"""Train the sanitizer's injection classifier from the training split.

    python scripts/train_injection_classifier.py [--data DIR] [--out PATH]

Reads train.jsonl.gz written by scripts/sanitizer_data.py (the evaluation split
is never read here), fits a class-balanced, L2-regularised logistic regression
over classifier.features() with full-batch Adam in numpy (no scikit-learn),
picks the default block threshold from out-of-fold scores, and writes the model
to services/sanitizer/data/injection_classifier.npz. The same data, seed and
code give the same weights.

Options tried in issue 21's fifth round, off by default: --draws N (the threshold
rule on N fold draws, the median counting), --min-rows M (small benign sources pooled
for the rule), --hidden [UNITS] (a hashed embedding bag with one ReLU layer beside the
linear weights, mini-batch Adam in numpy; classifier.HiddenLayer).

Sixth round, off by default: --words PATH (static word vectors distilled from a
sentence encoder by scripts/distill_word_vectors.py, stacked on the n-gram margin:
classifier.WordVectors; --words-hidden UNITS puts a ReLU layer in the stack).

Seventh round, off by default: --words PATH --word-window [SIZE,STRIDE] (a logistic
model over the mean row of each window of SIZE consecutive known words, every STRIDE;
the highest window margin is stacked beside the n-gram margin, and with
--word-window-mean beside the whole text's mean vector too); --ngram-from OOF MODEL
takes the n-gram model's out-of-fold margins and final weights from an earlier
--words run (they do not depend on the stack) instead of refitting them.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from headrace.services.sanitizer.classifier import (
    ARTEFACT,
    HiddenLayer,
    InjectionClassifier,
    WordVectors,
    _bytes,
    _parts_of,
    features,
    features_at,
    max_window_mean,
    window_spans,
    word_windows,
)

ROOT = Path(__file__).resolve().parents[1]
BITS = 18
L2 = 1e-5
STEPS = 300
LEARNING_RATE = 0.05
FOLDS = 3
SEED = 21
DRAWS = 1
"""Fold draws (seeds SEED, SEED + 1, ...) the threshold rule is applied to, the median
of their thresholds counting (--draws); 1: one draw, as the shipped model was trained."""
MIN_ROWS = 0
"""Benign sources with fewer rows are pooled for the threshold rule (--min-rows); 0:
every source on its own."""
POOLED = "(small sources pooled)"
SOURCE_GROUPS = {"headrace.hard_negatives": "headrace.corpus"}
"""Sources that count as one for the threshold rule: the hand-written benign rows of
tests/sanitizer/corpus, written in two rounds in the same style."""
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
    "headrace.hard_negatives": 2.0,
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


class FastMatrix:
    """Matrix's rows with each feature once per row (its count folded into its value),
    laid out twice: by row for dot(), by feature for grad() (np.add.reduceat over
    contiguous runs instead of a scatter). The same sums in another order: about twice
    as fast, for the many fold fits of several fold draws."""

    def __init__(self, x: Matrix | None = None) -> None:
        if x is None:
            return
        key = x.row.astype(np.int64) * x.dim + x.index
        uniq, counts = np.unique(key, return_counts=True)
        row, index = uniq // x.dim, uniq % x.dim
        value = (1.0 / np.sqrt(np.maximum(x.lengths, NORM_FLOOR)))[row] * counts
        self._set(row, index, value, x.n, x.dim)

    def _set(self, row: np.ndarray, index: np.ndarray, value: np.ndarray, n: int, dim: int) -> None:
        self.row, self.index, self.value, self.n, self.dim = row, index, value, n, dim
        self.starts = np.searchsorted(row, np.arange(n))  # row-major: rows are sorted
        self.filled = np.flatnonzero(np.bincount(row, minlength=n))
        by_feature = np.argsort(index, kind="stable")
        self.f_index, self.f_row = index[by_feature], row[by_feature]
        self.f_value = value[by_feature]
        self.f_starts = np.flatnonzero(np.diff(self.f_index, prepend=-1))

    def take(self, rows: np.ndarray) -> FastMatrix:
        keep = np.isin(self.row, rows)
        remap = np.full(self.n, -1)
        remap[rows] = np.arange(len(rows))
        out = object.__new__(FastMatrix)
        out._set(remap[self.row[keep]], self.index[keep], self.value[keep], len(rows), self.dim)
        return out

    def dot(self, w: np.ndarray) -> np.ndarray:
        out = np.zeros(self.n)
        if len(self.row):
            sums = np.add.reduceat(w.take(self.index) * self.value, self.starts[self.filled])
            out[self.filled] = sums
        return out

    def grad(self, err: np.ndarray) -> np.ndarray:
        out = np.zeros(self.dim)
        if len(self.f_index):
            sums = np.add.reduceat(err.take(self.f_row) * self.f_value, self.f_starts)
            out[self.f_index[self.f_starts]] = sums
        return out


def fit(
    x: Matrix | FastMatrix, y: np.ndarray, sample_weight: np.ndarray, steps: int = STEPS
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


HIDDEN = 16
"""--hidden: ReLU units of the hidden layer (classifier.HiddenLayer)."""
EMBED_BITS = 15
"""Rows of the hidden layer's embedding: 2**EMBED_BITS (the artefact stays under 2 MB)."""
HIDDEN_EPOCHS = 24
HIDDEN_BATCH = 256
HIDDEN_LEARNING_RATE = 0.003
HIDDEN_INIT = 0.1


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


class _Adam:
    """Dense Adam over a list of arrays (updated in place)."""

    def __init__(self, params: list[np.ndarray], lr: float) -> None:
        self.params, self.lr, self.t = params, lr, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        lr = self.lr * np.sqrt(1 - beta2**self.t) / (1 - beta1**self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m *= beta1
            m += (1 - beta1) * g
            v *= beta2
            v += (1 - beta2) * g * g
            p -= lr * m / (np.sqrt(v) + eps)


def _hidden_forward(
    x: FastMatrix, rows: np.ndarray, params: list[np.ndarray], shift: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(logits, hidden pre-activations, the batch's feature index, value, and each
    feature's row in the batch) for the given rows of x."""
    w, b, embed, b1, w2 = params
    ends = np.append(x.starts[1:], len(x.row))
    pieces = [np.arange(x.starts[r], ends[r]) for r in rows]
    lengths = np.array([len(q) for q in pieces])
    at = np.concatenate(pieces)
    index, value = x.index[at], x.value[at]
    batch_row = np.repeat(np.arange(len(rows)), lengths)
    lin = np.bincount(batch_row, weights=w.take(index) * value, minlength=len(rows))
    contrib = embed.take(index >> shift, axis=0) * value[:, None]
    bounds = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    filled = lengths > 0
    z = np.zeros((len(rows), embed.shape[1]))
    z[filled] = np.add.reduceat(contrib, bounds[filled], axis=0)
    pre = z + b1
    logits = b[0] + lin + (np.maximum(pre, 0.0) * w2).sum(axis=1)
    return logits, pre, index, value, batch_row


def fit_hidden(
    x: FastMatrix,
    y: np.ndarray,
    sample_weight: np.ndarray,
    *,
    bits: int,
    hidden: int = HIDDEN,
    embed_bits: int = EMBED_BITS,
    epochs: int = HIDDEN_EPOCHS,
) -> list[np.ndarray]:
    """Mini-batch Adam on the weighted logistic loss + L2 of the linear weights and a
    hidden layer over the same features; returns [w, [b], embed, hidden bias, out]."""
    rng = np.random.default_rng(SEED)
    embed_bits = min(embed_bits, bits)
    shift = bits - embed_bits
    params = [
        np.zeros(1 << bits),
        np.zeros(1),
        rng.normal(0.0, HIDDEN_INIT, size=(1 << embed_bits, hidden)),
        np.full(hidden, HIDDEN_INIT),
        rng.normal(0.0, 1.0 / np.sqrt(hidden), size=hidden),
    ]
    adam = _Adam(params, HIDDEN_LEARNING_RATE)
    mean_weight = sample_weight.mean()
    for _ in range(epochs):
        order = rng.permutation(x.n)
        for start in range(0, x.n, HIDDEN_BATCH):
            rows = order[start : start + HIDDEN_BATCH]
            logits, pre, index, value, batch_row = _hidden_forward(x, rows, params, shift)
            err = (_sigmoid(logits) - y[rows]) * sample_weight[rows] / (mean_weight * len(rows))
            w, _, embed, _, w2 = params
            active = pre > 0
            d_pre = err[:, None] * w2 * active
            g_w = np.bincount(index, weights=err[batch_row] * value, minlength=len(w)) + L2 * w
            d_embed = d_pre[batch_row] * value[:, None]
            g_embed = np.stack(
                [
                    np.bincount(index >> shift, weights=d_embed[:, j], minlength=len(embed))
                    for j in range(hidden)
                ],
                axis=1,
            )
            g_embed += L2 * embed
            grads = [
                g_w,
                np.array([err.sum()]),
                g_embed,
                d_pre.sum(axis=0),
                (np.maximum(pre, 0.0) * err[:, None]).sum(axis=0),
            ]
            adam.step(grads)
    return params


def score_hidden(x: FastMatrix, params: list[np.ndarray], bits: int) -> np.ndarray:
    shift = bits - params[2].shape[0].bit_length() + 1
    out = np.zeros(x.n)
    for start in range(0, x.n, 1024):
        rows = np.arange(start, min(x.n, start + 1024))
        out[rows] = _sigmoid(_hidden_forward(x, rows, params, shift)[0])
    return out


def row_columns(
    rows: list[dict[str, object]],
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The training rows as columns: texts, labels (float), sources, and each row's
    weight as a hard negative (HARD_NEGATIVES, 1 elsewhere)."""
    texts = [str(r["text"]) for r in rows]
    y = np.array([int(r["label"]) for r in rows], dtype=float)  # type: ignore[call-overload]
    sources = np.array([str(r["source"]) for r in rows])
    hard = np.array([HARD_NEGATIVES.get(str(r["source"]), 1.0) for r in rows])
    return texts, y, sources, hard


def with_outcome(
    meta: dict[str, object], y: np.ndarray, sources: np.ndarray, recall: float, fp: float
) -> None:
    """The artefact's last meta entries, the same for every kind of model: what it was
    trained on and how its threshold did out of fold."""
    meta["trained_on"] = len(y)
    meta["sources"] = sorted(set(sources.tolist()))
    meta["out_of_fold"] = {"attacks_caught": round(recall, 4), "benign_flagged": round(fp, 4)}


def balanced(y: np.ndarray, hard: np.ndarray) -> np.ndarray:
    """Each class weighs the same in the loss; within the benign class, hard negatives
    weigh `hard` times an ordinary row."""
    w = np.where(y == 1, 1.0, hard)
    pos, neg = w[y == 1].sum(), w[y == 0].sum()
    return np.where(y == 1, w * 0.5 * len(y) / pos, w * 0.5 * len(y) / neg)


def pooled(y: np.ndarray, sources: np.ndarray, min_rows: int) -> np.ndarray:
    """The groups the threshold rule holds to its target: each benign source with at
    least min_rows benign rows on its own, the smaller ones together (so that no
    source of a few dozen rows decides the threshold by one row)."""
    sources = np.array([SOURCE_GROUPS.get(s, s) for s in sources.tolist()])
    if min_rows <= 0:
        return sources
    names, counts = np.unique(sources[y == 0], return_counts=True)
    small = set(names[counts < min_rows].tolist())
    return np.array([POOLED if s in small else s for s in sources.tolist()])


def choose_threshold(
    oof: np.ndarray, y: np.ndarray, sources: np.ndarray, min_rows: int = 0
) -> float:
    """The least threshold under which every benign source (or pool of small sources,
    pooled()) keeps its out-of-fold false positives at TARGET_FALSE_POSITIVES or fewer."""
    sources = pooled(y, sources, min_rows)
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


def injection_texts(rows: list[dict[str, object]]) -> list[str]:
    """The training injections, sorted: what attack_start() looks for in embedded rows."""
    return sorted(
        {
            str(r["text"])
            for r in rows
            if r["family"] == "injection" and int(r["label"]) == 1  # type: ignore[call-overload]
        }
    )


def thinned(spans: np.ndarray) -> np.ndarray:
    """At most MAX_WINDOWS of a text's windows, evenly spread."""
    if len(spans) <= MAX_WINDOWS:
        return spans
    return spans[np.unique(np.linspace(0, len(spans) - 1, MAX_WINDOWS).round().astype(int))]


def window_label(start: int, end: int, attack: int, length: int) -> int | None:
    """A window [start, end) of a text whose injection begins at `attack` (== length:
    none): benign (0) wholly before it, an attack (1) inside it or holding all of it,
    None (left out) where it cuts the injection."""
    if end <= attack:
        return 0
    if start >= attack or end >= length:
        return 1
    return None


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
    attacks = injection_texts(rows)
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
        spans = thinned(spans)
        for s, e in spans:
            wl = window_label(s, e, n if start is None else start, n)
            if wl is None:
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
    draws: int = DRAWS,
    min_rows: int = MIN_ROWS,
    hidden: int = 0,
    epochs: int = HIDDEN_EPOCHS,
    words: Path | None = None,
    words_hidden: int = 0,
    word_window: tuple[int, int] | None = None,
    word_window_mean: bool = False,
    ngram_from: tuple[Path, Path] | None = None,
) -> InjectionClassifier:
    """The model for these training rows: out-of-fold scores choose the threshold,
    then the final fit uses every row. Deterministic: the same rows give the same model.

    With a window, the model scores a prompt as the highest of its whole text and its
    windows (classifier.InjectionClassifier.margin), and is trained on the same: each
    row's whole text and its windows (windows()); the out-of-fold scores that choose
    the threshold are computed the way the sanitizer computes them."""
    if words is not None:
        if hidden or window is not None:
            raise ValueError("--words stacks on the plain n-gram model: no --hidden or --window")
        if word_window is not None:
            return _train_word_windows(
                rows,
                bits=bits,
                steps=steps,
                log=log,
                oof_out=oof_out,
                draws=draws,
                min_rows=min_rows,
                words_path=words,
                window=word_window,
                with_mean=word_window_mean,
                ngram_from=ngram_from,
            )
        return _train_words(
            rows,
            bits=bits,
            steps=steps,
            log=log,
            oof_out=oof_out,
            draws=draws,
            min_rows=min_rows,
            words_path=words,
            hidden=words_hidden,
        )
    if hidden:
        return _train_hidden(
            rows,
            bits=bits,
            log=log,
            oof_out=oof_out,
            draws=draws,
            min_rows=min_rows,
            hidden=hidden,
            epochs=epochs,
        )
    if window is not None:
        return _train_windowed(
            rows, bits=bits, steps=steps, log=log, oof_out=oof_out, window=window
        )
    texts, y, sources, hard = row_columns(rows)
    x = Matrix(texts, bits)

    # Out-of-fold scores choose the threshold: scores on training rows themselves
    # are optimistic.
    if draws == 1:
        # On Matrix, not oof_draws' FastMatrix: the shipped artefact's sums, in its order.
        oof = np.zeros(len(rows))
        for _, fold_train, test in fold_draws(len(rows), 1, log):
            w, b = fit(
                x.take(fold_train), y[fold_train], balanced(y[fold_train], hard[fold_train]), steps
            )
            oof[test] = 1.0 / (1.0 + np.exp(-(x.take(test).dot(w) + b)))
        per_draw = oof[None, :]
    else:
        per_draw = oof_draws(x, y, hard, steps, draws, log)
        oof = per_draw.mean(axis=0)  # what --oof writes beside each draw's scores
    return _final(
        x,
        y,
        hard,
        steps,
        bits,
        log,
        oof_out,
        oof,
        y,
        sources,
        window=None,
        per_draw=per_draw,
        min_rows=min_rows,
    )


def oof_draws(
    x: Matrix, y: np.ndarray, hard: np.ndarray, steps: int, draws: int, log: Callable[[str], object]
) -> np.ndarray:
    """Out-of-fold scores of every row under `draws` independent fold draws (seeds SEED,
    SEED + 1, ...), one row per draw. The fold fits run on FastMatrix (the same sums,
    each feature once per row with its count, in another order)."""
    fast = FastMatrix(x)
    out = np.zeros((draws, x.n))
    for d, fold_train, test in fold_draws(x.n, draws, log):
        w, b = fit(
            fast.take(fold_train),
            y[fold_train],
            balanced(y[fold_train], hard[fold_train]),
            steps,
        )
        out[d, test] = 1.0 / (1.0 + np.exp(-(fast.take(test).dot(w) + b)))
    return out


def fold_draws(
    n: int, draws: int, log: Callable[[str], object]
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(draw, training rows, held-out rows) of every fold of `draws` independent fold
    draws of n rows (seeds SEED, SEED + 1, ...), each row index list sorted."""
    for d in range(draws):
        order = np.random.default_rng(SEED + d).permutation(n)
        folds = np.array_split(order, FOLDS)
        for k, test in enumerate(folds):
            log(f"draw {d + 1} of {draws}, fold {k + 1} of {FOLDS}")
            fold_train = np.sort(np.concatenate([f for j, f in enumerate(folds) if j != k]))
            yield d, fold_train, np.sort(test)


def rule_threshold(
    per_draw: np.ndarray,
    y: np.ndarray,
    sources: np.ndarray,
    min_rows: int,
    log: Callable[[str], object],
) -> tuple[float, float, float]:
    """The threshold rule (choose_threshold) on each fold draw's out-of-fold scores, and
    the median of what it gives (one draw: its own); with the share of attacks caught
    and of benign rows over it, out of fold, averaged over the draws (and logged per
    source)."""
    each = [choose_threshold(d, y, sources, min_rows) for d in per_draw]
    threshold = float(np.median(each))
    if len(each) > 1:
        log(f"the rule on each of {len(each)} fold draws: {each}; their median: {threshold}")
    over = per_draw >= threshold
    for source in sorted(set(sources)):
        for label in (0, 1):
            mine = (sources == source) & (y == label)
            if mine.any():
                log(
                    f"  {source:26} label {label} {int(mine.sum()):5} rows, out-of-fold over "
                    f"threshold: {over[:, mine].mean():.1%}"
                )
    recall = float(over[:, y == 1].mean())
    fp = float(over[:, y == 0].mean())
    log(f"out-of-fold: threshold {threshold}, attacks caught {recall:.1%}, benign {fp:.2%}")
    return threshold, recall, fp


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
    per_draw: np.ndarray | None = None,
    min_rows: int = 0,
) -> InjectionClassifier:
    """The threshold from the rows' out-of-fold scores (reported per source), then
    the fit on everything (x, y, hard: rows, and windows where there are any)."""
    if per_draw is None:
        per_draw = oof[None, :]
    if oof_out is not None:
        np.savez(oof_out, oof=oof, y=y_rows, sources=sources, per_draw=per_draw)
    threshold, recall, fp = rule_threshold(per_draw, y_rows, sources, min_rows, log)

    log(f"the final fit, on every training row{' and window' if window else ''}")
    w, b = fit(x, y, balanced(y, hard), steps)
    meta: dict[str, object] = {"threshold": threshold, "norm_floor": NORM_FLOOR}
    if len(per_draw) > 1 or min_rows:
        meta["threshold_rule"] = {"fold_draws": len(per_draw), "folds": FOLDS, "min_rows": min_rows}
    if window is not None:
        meta["window"] = window
    with_outcome(meta, y_rows, sources, recall, fp)
    return InjectionClassifier(w.astype(np.float32), float(b), bits, meta)


def _train_hidden(
    rows: list[dict[str, object]],
    *,
    bits: int,
    log: Callable[[str], object],
    oof_out: Path | None,
    draws: int,
    min_rows: int,
    hidden: int,
    epochs: int,
) -> InjectionClassifier:
    """The linear weights plus a hidden layer (fit_hidden), the threshold chosen by the
    same rule from out-of-fold scores of `draws` fold draws."""
    texts, y, sources, hard = row_columns(rows)
    x = FastMatrix(Matrix(texts, bits))
    per_draw = np.zeros((draws, x.n))
    for d, fold_train, test in fold_draws(x.n, draws, log):
        params = fit_hidden(
            x.take(fold_train),
            y[fold_train],
            balanced(y[fold_train], hard[fold_train]),
            bits=bits,
            hidden=hidden,
            epochs=epochs,
        )
        per_draw[d, test] = score_hidden(x.take(test), params, bits)
    if oof_out is not None:
        np.savez(oof_out, y=y, sources=sources, per_draw=per_draw)
    threshold, recall, fp = rule_threshold(per_draw, y, sources, min_rows, log)
    log("the final fit, on every training row")
    w, b, embed, b1, w2 = fit_hidden(
        x, y, balanced(y, hard), bits=bits, hidden=hidden, epochs=epochs
    )
    meta: dict[str, object] = {"threshold": threshold, "norm_floor": NORM_FLOOR}
    meta["threshold_rule"] = {"fold_draws": draws, "folds": FOLDS, "min_rows": min_rows}
    meta["hidden"] = {"units": hidden, "embed_bits": int(embed.shape[0]).bit_length() - 1}
    with_outcome(meta, y, sources, recall, fp)
    layer = HiddenLayer(embed.astype(np.float32), b1.astype(np.float32), w2.astype(np.float32))
    return InjectionClassifier(w.astype(np.float32), float(b[0]), bits, meta, layer)


def _train_windowed(
    rows: list[dict[str, object]],
    *,
    bits: int,
    steps: int,
    log: Callable[[str], object],
    oof_out: Path | None,
    window: tuple[int, int],
) -> InjectionClassifier:
    texts, y_rows, sources, hard_rows = row_columns(rows)
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


STACK_STEPS = 600
STACK_LEARNING_RATE = 0.02
STACK_L2 = 1e-4
"""The stack over [word vector, n-gram margin]: full-batch Adam on the weighted logistic
loss, features standardised on the rows it is fitted on, L2 on every weight. Fixed
before any evaluation; not tuned."""
WORDS_HIDDEN = 16
"""--words-hidden: ReLU units in the stack (0: a logistic stack)."""


def word_vectors(keys: np.ndarray, rows: np.ndarray) -> WordVectors:
    """A WordVectors over the distilled rows, quantised as the artefact stores them (so
    the vectors training sees are the ones the sanitizer computes)."""
    dims = rows.shape[1]
    empty = WordVectors(
        keys,
        rows.astype(np.float32),
        0.0,
        0.0,
        np.zeros(dims),
        np.zeros((0, dims + 1)),
        np.zeros(0),
        np.zeros(0),
    )
    return WordVectors.from_arrays(empty.arrays())


def load_words(path: Path) -> tuple[WordVectors, dict[str, object]]:
    """A distilled table (distill_word_vectors.save()) as word_vectors() gives it, and
    the table's meta."""
    with np.load(path, allow_pickle=False) as data:
        keys, table = data["keys"], data["rows"]
        words_meta = json.loads(str(data["meta"]))
    return word_vectors(keys, table), words_meta


def fit_stack(
    f: np.ndarray, y: np.ndarray, sample_weight: np.ndarray, hidden: int, steps: int = STACK_STEPS
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The stack on features f (rows x [vector dims..., n-gram margin]): (mean, sd, params),
    params [linear (k,), [bias], hidden (units, k), hidden bias, out]; deterministic."""
    mu = f.mean(axis=0)
    sd = f.std(axis=0)
    sd = np.where(sd > 1e-9, sd, 1.0)
    z = (f - mu) / sd
    k = f.shape[1]
    rng = np.random.default_rng(SEED)
    params = [
        np.zeros(k),
        np.zeros(1),
        rng.normal(0.0, 1.0 / np.sqrt(k), size=(hidden, k)),
        np.zeros(hidden),
        rng.normal(0.0, 1.0 / np.sqrt(max(hidden, 1)), size=hidden),
    ]
    adam = _Adam(params, STACK_LEARNING_RATE)
    total = sample_weight.sum()
    for _ in range(steps):
        logits, pre = _stack_forward(z, params)
        err = (_sigmoid(logits) - y) * sample_weight / total
        lin, _, w1, _, w2 = params
        grads = [(z * err[:, None]).sum(axis=0) + STACK_L2 * lin, np.array([err.sum()])]
        if hidden:
            d_pre = err[:, None] * w2 * (pre > 0)
            grads += [
                d_pre.T @ z + STACK_L2 * w1,
                d_pre.sum(axis=0),
                (np.maximum(pre, 0.0) * err[:, None]).sum(axis=0) + STACK_L2 * w2,
            ]
        else:
            grads += [np.zeros_like(w1), np.zeros(0), np.zeros(0)]
        adam.step(grads)
    return mu, sd, params


def _stack_forward(z: np.ndarray, params: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lin, b, w1, b1, w2 = params
    logits = (z * lin).sum(axis=1) + b[0]
    pre = np.zeros((len(z), 0))
    if len(w2):
        pre = z @ w1.T + b1
        logits = logits + (np.maximum(pre, 0.0) * w2).sum(axis=1)
    return logits, pre


def score_stack(
    f: np.ndarray, mu: np.ndarray, sd: np.ndarray, params: list[np.ndarray]
) -> np.ndarray:
    return _sigmoid(_stack_forward((f - mu) / sd, params)[0])


def folded(
    words: WordVectors, mu: np.ndarray, sd: np.ndarray, params: list[np.ndarray]
) -> WordVectors:
    """The stack with its standardisation folded into the weights (classifier.WordVectors)."""
    lin, b, w1, b1, w2 = params
    bias = float(b[0] - (lin * mu / sd).sum())
    scaled = lin / sd
    hidden = w1 / sd
    hidden_bias = b1 - (w1 * (mu / sd)).sum(axis=1)
    return WordVectors(
        words.keys,
        words.rows,
        bias,
        float(scaled[-1]),
        scaled[:-1].astype(np.float32),
        hidden.astype(np.float32),
        hidden_bias.astype(np.float32),
        w2.astype(np.float32),
    )


def _train_words(
    rows: list[dict[str, object]],
    *,
    bits: int,
    steps: int,
    log: Callable[[str], object],
    oof_out: Path | None,
    draws: int,
    min_rows: int,
    words_path: Path,
    hidden: int,
    stack_steps: int = STACK_STEPS,
) -> InjectionClassifier:
    """The n-gram model, and a stack over [the text's word vector, its n-gram margin]: in
    each fold draw, out-of-fold n-gram margins for every row, then the stack fitted on
    two folds' [vector, margin] and scored on the third; the threshold by the same rule
    on those stacked out-of-fold scores. The final stack is fitted on every row's
    vector and its out-of-fold margin (the mean over the draws), the final n-gram model
    on every row as without words."""
    words, words_meta = load_words(words_path)
    texts, y, sources, hard = row_columns(rows)
    x = Matrix(texts, bits)
    fast = FastMatrix(x)
    vectors = np.stack([words.text_vector(t) for t in texts])
    known = float((np.abs(vectors).sum(axis=1) > 0).mean())
    log(f"word vectors: {len(words.keys)} words x {words.dims} dims; {known:.1%} of rows have one")
    margins = np.zeros((draws, len(rows)))
    per_draw = np.zeros((draws, len(rows)))
    alone = np.zeros((draws, len(rows)))
    folds_of = []
    for d, fold_train, test in fold_draws(len(rows), draws, log):
        folds_of.append((d, fold_train, test))
        w, b = fit(
            fast.take(fold_train), y[fold_train], balanced(y[fold_train], hard[fold_train]), steps
        )
        margins[d, test] = fast.take(test).dot(w) + b
    for d, fold_train, test in folds_of:
        f = np.column_stack([vectors, margins[d]])
        sw = balanced(y[fold_train], hard[fold_train])
        mu, sd, params = fit_stack(f[fold_train], y[fold_train], sw, hidden, stack_steps)
        per_draw[d, test] = score_stack(f[test], mu, sd, params)
        # The word vectors on their own (a logistic model, no n-gram margin): a
        # training figure of what the new signal knows by itself.
        mu, sd, params = fit_stack(vectors[fold_train], y[fold_train], sw, 0, stack_steps)
        alone[d, test] = score_stack(vectors[test], mu, sd, params)
    log("the word vectors alone (logistic, out of fold):")
    rule_threshold(alone, y, sources, min_rows, log)
    log("the n-gram model alone (out of fold, the same folds):")
    rule_threshold(_sigmoid(margins), y, sources, min_rows, log)
    log("the stack:")
    if oof_out is not None:
        np.savez(oof_out, y=y, sources=sources, per_draw=per_draw, alone=alone, margins=margins)
    threshold, recall, fp = rule_threshold(per_draw, y, sources, min_rows, log)
    log("the final fit, on every training row")
    w, b = fit(x, y, balanced(y, hard), steps)
    f = np.column_stack([vectors, margins.mean(axis=0)])
    mu, sd, params = fit_stack(f, y, balanced(y, hard), hidden, stack_steps)
    meta: dict[str, object] = {"threshold": threshold, "norm_floor": NORM_FLOOR}
    meta["threshold_rule"] = {"fold_draws": draws, "folds": FOLDS, "min_rows": min_rows}
    meta["words"] = {**words_meta, "stack_hidden": hidden}
    with_outcome(meta, y, sources, recall, fp)
    return InjectionClassifier(
        w.astype(np.float32), float(b), bits, meta, words=folded(words, mu, sd, params)
    )


WORD_WINDOW = (12, 6)
"""--word-window: windows of 12 known words every 6 (fixed before any evaluation)."""


def known_words(words: WordVectors, text: str) -> tuple[np.ndarray, np.ndarray]:
    """(row index of each word of the text that has a row, the byte offset where it starts)."""
    b = _bytes(text)
    starts: list[np.ndarray] = []
    raw: list[np.ndarray] = []
    _parts_of(b, 8, word_starts=starts, raw_words=raw)
    if not raw:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    at, found = words.known(raw[0])
    return at, starts[0][found]


def word_window_rows(
    rows: list[dict[str, object]],
    known: list[tuple[np.ndarray, np.ndarray]],
    window: tuple[int, int],
) -> tuple[list[np.ndarray], list[int], list[int]]:
    """Training instances of the window model: (row indices of the window's words, label,
    the training row it came from).

    A benign row's windows are benign (at most MAX_WINDOWS, evenly spread). Of an
    embedded attack (a benign task, a separator, then an injection: attack_start() says
    where) the windows wholly in the injection, or holding all of it, are attacks, those
    wholly in the task benign, those that cut the injection left out. Another attack is
    one instance, its whole text (where the attack is in it is not known)."""
    size, stride = window
    attacks = injection_texts(rows)
    inst: list[np.ndarray] = []
    labels: list[int] = []
    parent: list[int] = []
    for i, (r, (at, pos)) in enumerate(zip(rows, known, strict=True)):
        if len(at) == 0:
            continue
        label = int(r["label"])  # type: ignore[call-overload]
        if label == 1 and r["source"] != "headrace.embedded":
            inst.append(at)
            labels.append(1)
            parent.append(i)
            continue
        start = attack_start(str(r["text"]), attacks) if label == 1 else None
        if label == 1 and start is None:
            continue
        spans = word_windows(len(at), size, stride)
        spans = thinned(spans)
        first = int(np.searchsorted(pos, start)) if start is not None else len(at)
        for s, e in spans:
            wl = window_label(s, e, first, len(at))
            if wl is None:
                continue
            inst.append(at[s:e])
            labels.append(wl)
            parent.append(i)
    return inst, labels, parent


def fit_window_model(
    table: np.ndarray, inst: list[np.ndarray], y: np.ndarray, sw: np.ndarray, steps: int
) -> tuple[np.ndarray, float]:
    """The window model (logistic over a window's mean row): (weights, bias) on the raw
    rows, its standardisation folded in."""
    f = np.stack([table.take(a, axis=0).mean(axis=0, dtype=np.float64) for a in inst])
    mu, sd, params = fit_stack(f, y, sw, 0, steps)
    lin, b = params[0], params[1]
    return lin / sd, float(b[0] - (lin * mu / sd).sum())


def max_window_margins(
    table: np.ndarray,
    known: list[tuple[np.ndarray, np.ndarray]],
    w: np.ndarray,
    b: float,
    window: tuple[int, int],
) -> np.ndarray:
    """Each text's highest window margin, computed as WordVectors.window_margin does."""
    values = table.astype(np.float64) @ w.astype(np.float32).astype(np.float64)
    return np.array([b + max_window_mean(values.take(at), *window) for at, _ in known])


def _train_word_windows(
    rows: list[dict[str, object]],
    *,
    bits: int,
    steps: int,
    log: Callable[[str], object],
    oof_out: Path | None,
    draws: int,
    min_rows: int,
    words_path: Path,
    window: tuple[int, int],
    with_mean: bool,
    ngram_from: tuple[Path, Path] | None,
    stack_steps: int = STACK_STEPS,
) -> InjectionClassifier:
    """As _train_words, with the word signal a window model: in each fold, the window
    model is fitted on the two training folds' windows (word_window_rows()) and gives
    every held-out row its highest window margin; the logistic stack over [n-gram
    margin, that margin] (and the text's mean vector, with_mean) is fitted on the two
    folds and scored on the third; the threshold by the same rule. Final: the window
    model on every row's windows, the stack on every row's mean out-of-fold margins."""
    words, words_meta = load_words(words_path)
    texts, y, sources, hard = row_columns(rows)
    known = [known_words(words, t) for t in texts]
    inst, inst_y_list, parent_list = word_window_rows(rows, known, window)
    inst_y = np.array(inst_y_list, dtype=float)
    parent = np.array(parent_list)
    log(
        f"window model: {len(inst)} instances ({int(inst_y.sum())} attacks) from "
        f"{len(set(parent_list))} rows; windows of {window[0]} words every {window[1]}"
    )
    vectors = np.stack([words.text_vector(t) for t in texts]) if with_mean else None
    if ngram_from is not None:
        oof_path, model_path = ngram_from
        with np.load(oof_path, allow_pickle=False) as data:
            margins = data["margins"]
            if not np.array_equal(data["y"], y) or margins.shape != (draws, len(rows)):
                raise ValueError(f"{oof_path}: another training set or number of draws")
        earlier = InjectionClassifier.load(model_path)
        w, b = earlier.weights, earlier.bias
        log(f"the n-gram margins and final weights from {oof_path} and {model_path}")
    else:
        x = Matrix(texts, bits)
        fast = FastMatrix(x)
        margins = np.zeros((draws, len(rows)))
    maxwin = np.zeros((draws, len(rows)))
    per_draw = np.zeros((draws, len(rows)))
    for d, fold_train, test in fold_draws(len(rows), draws, log):
        if ngram_from is None:
            wn, bn = fit(
                fast.take(fold_train),
                y[fold_train],
                balanced(y[fold_train], hard[fold_train]),
                steps,
            )
            margins[d, test] = fast.take(test).dot(wn) + bn
        mine = np.flatnonzero(np.isin(parent, fold_train))
        sw = balanced(inst_y[mine], hard[parent[mine]])
        ww, wb = fit_window_model(
            words.rows, [inst[i] for i in mine], inst_y[mine], sw, stack_steps
        )
        maxwin[d, test] = max_window_margins(words.rows, [known[i] for i in test], ww, wb, window)
    for d, fold_train, test in fold_draws(len(rows), draws, lambda _: None):
        f = _window_stack_features(vectors, margins[d], maxwin[d])
        sw = balanced(y[fold_train], hard[fold_train])
        mu, sd, params = fit_stack(f[fold_train], y[fold_train], sw, 0, stack_steps)
        per_draw[d, test] = score_stack(f[test], mu, sd, params)
    log("the window model's highest window margin alone (out of fold):")
    rule_threshold(_sigmoid(maxwin), y, sources, min_rows, log)
    log("the n-gram model alone (out of fold, the same folds):")
    rule_threshold(_sigmoid(margins), y, sources, min_rows, log)
    log("the stack:")
    if oof_out is not None:
        np.savez(oof_out, y=y, sources=sources, per_draw=per_draw, maxwin=maxwin, margins=margins)
    threshold, recall, fp = rule_threshold(per_draw, y, sources, min_rows, log)
    log("the final fit, on every training row")
    if ngram_from is None:
        w, b = fit(x, y, balanced(y, hard), steps)
    ww, wb = fit_window_model(words.rows, inst, inst_y, balanced(inst_y, hard[parent]), stack_steps)
    f = _window_stack_features(vectors, margins.mean(axis=0), maxwin.mean(axis=0))
    mu, sd, params = fit_stack(f, y, balanced(y, hard), 0, stack_steps)
    lin, b0 = params[0] / sd, float(params[1][0] - (params[0] * mu / sd).sum())
    dims = words.dims
    stack = WordVectors(
        words.keys,
        words.rows,
        b0,
        float(lin[-2]),
        (lin[:dims] if with_mean else np.zeros(dims)).astype(np.float32),
        np.zeros((0, dims + 1), dtype=np.float32),
        np.zeros(0, dtype=np.float32),
        np.zeros(0, dtype=np.float32),
        window=window,
        window_linear=ww.astype(np.float32),
        window_bias=wb,
        window_weight=float(lin[-1]),
    )
    meta: dict[str, object] = {"threshold": threshold, "norm_floor": NORM_FLOOR}
    meta["threshold_rule"] = {"fold_draws": draws, "folds": FOLDS, "min_rows": min_rows}
    meta["words"] = {
        **words_meta,
        "stack_hidden": 0,
        "window": {"size": window[0], "stride": window[1], "with_mean": with_mean},
    }
    with_outcome(meta, y, sources, recall, fp)
    return InjectionClassifier(w.astype(np.float32), float(b), bits, meta, words=stack)


def _window_stack_features(
    vectors: np.ndarray | None, margins: np.ndarray, maxwin: np.ndarray
) -> np.ndarray:
    """The stack's features: [the mean vector (optional)..., n-gram margin, window margin]."""
    cols = [margins[:, None], maxwin[:, None]]
    return np.hstack(([vectors] if vectors is not None else []) + cols)


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
    parser.add_argument(
        "--draws",
        type=int,
        default=DRAWS,
        help=f"average the out-of-fold scores of this many fold draws (default {DRAWS})",
    )
    parser.add_argument(
        "--min-rows",
        type=int,
        default=MIN_ROWS,
        help="pool the benign sources with fewer rows than this for the threshold rule "
        f"(default {MIN_ROWS}: none pooled)",
    )
    parser.add_argument(
        "--hidden",
        type=int,
        nargs="?",
        const=HIDDEN,
        default=0,
        metavar="UNITS",
        help=f"add a hashed embedding bag with a ReLU layer of UNITS units (default {HIDDEN})",
    )
    parser.add_argument("--epochs", type=int, default=HIDDEN_EPOCHS, help="with --hidden")
    parser.add_argument(
        "--words",
        type=Path,
        help="stack static word vectors (scripts/distill_word_vectors.py writes them) on "
        "the n-gram margin",
    )
    parser.add_argument(
        "--words-hidden",
        type=int,
        nargs="?",
        const=WORDS_HIDDEN,
        default=0,
        metavar="UNITS",
        help=f"with --words: a ReLU layer of UNITS units in the stack (default {WORDS_HIDDEN})",
    )
    parser.add_argument(
        "--word-window",
        nargs="?",
        const=f"{WORD_WINDOW[0]},{WORD_WINDOW[1]}",
        metavar="SIZE,STRIDE",
        help="with --words: stack the highest margin of a model over windows of SIZE "
        f"known words every STRIDE (default {WORD_WINDOW[0]},{WORD_WINDOW[1]}) instead of "
        "the mean vector",
    )
    parser.add_argument(
        "--word-window-mean",
        action="store_true",
        help="with --word-window: the whole text's mean vector in the stack as well",
    )
    parser.add_argument(
        "--ngram-from",
        nargs=2,
        type=Path,
        metavar=("OOF", "MODEL"),
        help="with --word-window: the n-gram model's out-of-fold margins (an earlier "
        "--words run's --oof file, same data and draws) and final weights (its artefact), "
        "instead of refitting them",
    )
    args = parser.parse_args()
    with gzip.open(args.data / "train.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    model = train(
        rows,
        log=lambda line: print(line, flush=True),
        oof_out=args.oof,
        window=tuple(int(v) for v in args.window.split(",")) if args.window else None,  # type: ignore[arg-type]
        draws=args.draws,
        min_rows=args.min_rows,
        hidden=args.hidden,
        epochs=args.epochs,
        words=args.words,
        words_hidden=args.words_hidden,
        word_window=tuple(int(v) for v in args.word_window.split(","))  # type: ignore[arg-type]
        if args.word_window
        else None,
        word_window_mean=args.word_window_mean,
        ngram_from=tuple(args.ngram_from) if args.ngram_from else None,
    )
    model.save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
