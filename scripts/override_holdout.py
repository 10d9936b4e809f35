"""Issue 21, tenth round: does the override attacks' new instruction being a benign row
teach the model the override's exact words? A test on training data only.

    python scripts/override_holdout.py [--mirrors DIR] [--draws N] [--json PATH]

The ninth round's candidate attacks (`rebuff`, `pallms`) are an override followed by a
self-instruct task as the new instruction, and the same self-instruct tasks are benign
rows (and the benign tasks of headrace.embedded). Hypothesis: a model that must score
"override + task" as an attack and "task" as benign learns the override's exact words
rather than the pattern. Test: out-of-fold scores of the n-gram model (the shipped
model's n-gram part: same features, loss, steps and weights) where the folds are
**grouped by override template**: every rebuff row with the same verb, every pallms row
of the same payload line, and every headrace.embedded attack carrying one of them, fall
in the same fold, so the override's wording is held out of the fold that scores it.
Every other row is drawn into folds at random, as in training.

Constructions compared (the self-instruct pool split once, seed 21, into S1 of 88 tasks
and S2 of 87):

- shipped: the shipped training rows (no rebuff, no pallms).
- X: + rebuff + pallms, new instructions from every self-instruct task (the ninth
  round's construction; the tasks are benign rows too).
- Xs: + rebuff + pallms, self-instruct benign rows S1 only, new instructions from S1
  (shared, as X, on the smaller pool).
- Ys: as Xs, but the new instructions from S2, which is in no benign row (disjoint).

Xs and Ys have the same benign rows and differ only in where the new instruction comes
from: that pair tests the hypothesis. The threshold is the training rule (1% per
benign source, the median over the fold draws' thresholds); figures are averaged over
the draws.

Eleventh round, construction Z: as X (rebuff + pallms, new instructions from every
self-instruct task), but headrace.embedded draws its attacks from the shipped rows only,
so Z's embedded rows are the shipped construction's, row for row; the new sources add
their standalone rows only. Z against X isolates the embedded attacks that carry a
new-source attack (733 in X); Z against shipped, the standalone new rows alone.
`--kinds Z,X` runs it (X again, as a check that this machinery reproduces the tenth
round's figures).

Declared for Z before its first run. The figure is R, the recall on the shipped sources'
attacks that are not embedded (885 rows, the same in every construction) at the common
operating point (0.5% of pooled benign rows over, per draw), averaged over the 3 draws;
the spread is the largest between-draw range (max - min) of R among shipped, X and Z.
- **Confirmed** (the tenth round's loss on the shipped sources' attacks comes from the
  embedded new-source attacks): R(Z) - R(X) > spread and R(shipped) - R(Z) <= spread.
- **Refuted**: R(Z) - R(X) <= spread.
- **Partly** otherwise (Z wins back more than the spread but stays further than the
  spread below shipped).
A candidate (Z's construction as a data-build option, trained with make
train-sanitizer's full options, evaluated once) is declared only if confirmed, Z's
held-out-template recall on the new sources' standalone attacks at 0.5% benign is not
below X's (89.7%) by more than the spread, and the test ends before 00:55 UTC.

Thirteenth round, construction ZY: Z combined with the tenth round's disjoint
instructions. Ys's rows (rebuff + pallms; self-instruct benign rows S1 only; the new
instructions from S2), but headrace.embedded draws from the construction's rows before
the new sources join (the shipped rows with self-instruct restricted to S1), so ZY's
embedded rows carry no new-source attack and no S2 task. ZY does not embed from the
full `base` as Z does, because `base` holds all 175 self-instruct tasks: the S2 tasks
would enter benign embedded rows (and embedded attacks) as tasks, and the new
instructions would no longer be disjoint from the benign rows. `--kinds shipped,Z,Ys,ZY`
runs it.

Declared for ZY before its first run, with the eleventh round's figures. R is the recall
on the shipped sources' attacks that are not embedded (the 885 rows) at 0.5% of pooled
benign rows over ("at 0.5% benign"), averaged over the 3 draws; R_rule is the same set's
recall at the rule's threshold ("rule"). T is the rule's threshold (the median of the
draws' thresholds). The spread is the largest between-draw range (max - min) of R among
the constructions run in the same job.
- **Confirmed** (the threshold comes down when the override attacks' tasks are no benign
  rows, without losing the shipped sources' attacks): R_rule(ZY) - R_rule(Z) > spread
  and R(shipped) - R(ZY) <= spread.
- **Refuted**: R_rule(ZY) - R_rule(Z) <= spread.
- **Partly** otherwise.
Reported for every construction run: T, and the held-out-template standalone recall
("new sources, alone (held-out template)") at 0.5% benign and at the rule. No candidate
model is trained in this round whatever the result; the result only says whether a later
round should train one.

Tenth round, declared before the first run: the test **favours** the disjoint construction if Ys,
against Xs, catches more of the held-out-template attacks (alone and embedded) at the
common operating point (0.5% of pooled benign rows over, per draw) by more than the
spread between the draws, and does not catch fewer of the shipped sources' attacks
there. Only then is a candidate (Ys's construction as a data-build option) declared,
trained with make train-sanitizer's options and evaluated once.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


data = _load("sanitizer_data")
trainer = _load("train_injection_classifier")

NEW = ("rebuff", "pallms")


def rebuff_rows(m: Path, tasks: list[str]) -> list[tuple[dict, str]]:
    """sanitizer_data.rebuff with the new instructions drawn from `tasks`; each row with
    its template group (the verb)."""
    return [
        (data.row(text, 1, "injection", "rebuff"), "rebuff:" + verb)
        for text, verb in data.rebuff_texts(m, tasks)
    ]


def pallms_rows(m: Path, tasks: list[str]) -> list[tuple[dict, str]]:
    """sanitizer_data.pallms with the new instructions drawn from `tasks`; each row with
    its template group (the payload line)."""
    return [
        (data.row(text, 1, "injection", "pallms"), f"pallms:{i}")
        for text, i in data.pallms_texts(m, tasks)
    ]


def construction(
    m: Path, base: list[dict], kind: str, s1: set[str]
) -> tuple[list[dict], list[str | None]]:
    """The training rows of one construction and each row's template group (None: no
    override template, folded at random)."""
    selfi = [r for r in base if r["source"] == "self_instruct"]
    all_tasks = [str(r["text"]).split("\n\n")[0] for r in selfi]
    if kind in ("shipped", "X", "Z"):
        rows = list(base)
        tasks = all_tasks
    else:
        rows = [r for r in base if r["source"] != "self_instruct" or r["text"] in s1]
        inside = [str(r["text"]).split("\n\n")[0] for r in selfi if r["text"] in s1]
        outside = [str(r["text"]).split("\n\n")[0] for r in selfi if r["text"] not in s1]
        tasks = inside if kind == "Xs" else outside
    # The rows before the new sources join: Z (eleventh round) and ZY (thirteenth)
    # embed from these (for Z the shipped rows, for ZY those with self-instruct
    # restricted to S1, so no S2 task enters a benign embedded row).
    before_new = list(rows)
    groups: dict[str, str] = {}
    if kind != "shipped":
        for r, g in pallms_rows(m, tasks) + rebuff_rows(m, tasks):  # sanitizer_data's order
            rows.append(r)
            groups.setdefault(str(r["text"]), g)
    # Z: headrace.embedded draws its attacks from the shipped rows only, so its rows
    # are the shipped construction's exactly; the new sources add their standalone
    # rows and nothing else. ZY: the same on Ys's rows.
    derived = data.embedded(before_new if kind in ("Z", "ZY") else rows)
    train = data.dedupe(rows + derived)
    # An embedded attack carrying a new-source attack joins that attack's group.
    by_len = sorted(groups, key=len, reverse=True)
    out_groups: list[str | None] = []
    for r in train:
        text = str(r["text"])
        g = groups.get(text)
        if g is None and r["source"] == "headrace.embedded" and int(r["label"]) == 1:
            for a in by_len:
                if text.endswith(a) or text.endswith(a.upper()):
                    g = groups[a]
                    break
        out_groups.append(g)
    return train, out_groups


def grouped_folds(groups: list[str | None], draws: int):
    """(draw, training rows, held-out rows) as trainer.fold_draws, but rows of one
    template group always share a fold."""
    n = len(groups)
    names = sorted({g for g in groups if g is not None})
    free = np.array([i for i, g in enumerate(groups) if g is None])
    for d in range(draws):
        rng = np.random.default_rng(trainer.SEED + d)
        fold_of = np.full(n, -1)
        order = rng.permutation(free)
        for k, part in enumerate(np.array_split(order, trainer.FOLDS)):
            fold_of[part] = k
        shuffled = [names[i] for i in rng.permutation(len(names))]
        # Greedy: each group to the fold with the fewest group rows so far.
        sizes = [0] * trainer.FOLDS
        count = {g: sum(1 for x in groups if x == g) for g in names}
        for g in sorted(shuffled, key=lambda g: -count[g]):
            k = int(np.argmin(sizes))
            sizes[k] += count[g]
            for i, x in enumerate(groups):
                if x == g:
                    fold_of[i] = k
        for k in range(trainer.FOLDS):
            yield d, np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)


def oof(rows: list[dict], groups: list[str | None], draws: int) -> np.ndarray:
    texts, y, _, hard = trainer.row_columns(rows)
    fast = trainer.FastMatrix(trainer.Matrix(texts, trainer.BITS))
    out = np.zeros((draws, len(rows)))
    for d, tr, te in grouped_folds(groups, draws):
        w, b = trainer.fit(fast.take(tr), y[tr], trainer.balanced(y[tr], hard[tr]))
        out[d, te] = 1.0 / (1.0 + np.exp(-(fast.take(te).dot(w) + b)))
        print(f"  draw {d + 1}, fold done ({len(te)} rows)", flush=True)
    return out


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    scores = np.concatenate([pos, neg])
    ranks = scores.argsort().argsort() + 1.0
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def report(rows: list[dict], groups: list[str | None], per_draw: np.ndarray) -> dict:
    _, y, sources, _ = trainer.row_columns(rows)
    each = [trainer.choose_threshold(d, y, sources) for d in per_draw]
    threshold = float(np.median(each))
    new = np.array([g is not None for g in groups])
    emb = sources == "headrace.embedded"
    sets = {
        "new sources, alone (held-out template)": (y == 1) & new & ~emb,
        "new sources, embedded (held-out template)": (y == 1) & new & emb,
        "rebuff alone": (y == 1) & (sources == "rebuff"),
        "pallms alone": (y == 1) & (sources == "pallms"),
        "shipped sources' attacks": (y == 1) & ~new,
        "shipped sources' embedded attacks": (y == 1) & ~new & emb,
        "shipped sources' attacks, not embedded": (y == 1) & ~new & ~emb,
    }
    out: dict[str, object] = {"threshold": threshold, "draw_thresholds": each}
    out["benign over"] = float((per_draw[:, y == 0] >= threshold).mean())
    out["rows"] = len(y)
    # A common operating point for every construction: each draw's 99.5th percentile
    # of its pooled benign scores (0.5% of benign rows over).
    fixed = [float(np.quantile(d[y == 0], 0.995)) for d in per_draw]
    for name, mask in sets.items():
        if not mask.any():
            continue
        rule = float((per_draw[:, mask] >= threshold).mean())
        each_fixed = [float((d[mask] >= t).mean()) for d, t in zip(per_draw, fixed, strict=True)]
        at_fixed = float(np.mean(each_fixed))
        a = float(np.mean([auc(d[mask], d[y == 0]) for d in per_draw]))
        out[name] = {
            "n": int(mask.sum()),
            "rule": rule,
            "at 0.5% benign": at_fixed,
            "each draw": each_fixed,
            "auc": a,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirrors", type=Path, default=data.DEFAULT_MIRRORS)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--kinds", default="shipped,X,Xs,Ys")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    base: list[dict] = []
    for name, role in data.roles([]).items():
        if role == "train":
            base.extend(data.BUILDERS[name](args.mirrors))
    selfi = sorted(str(r["text"]) for r in base if r["source"] == "self_instruct")
    random.Random(data.SEED).shuffle(selfi)
    s1 = set(selfi[: (len(selfi) + 1) // 2])
    results = {}
    for kind in args.kinds.split(","):
        rows, groups = construction(args.mirrors, base, kind, s1)
        print(f"{kind}: {len(rows)} rows, {sum(g is not None for g in groups)} in templates")
        results[kind] = report(rows, groups, oof(rows, groups, args.draws))
        print(json.dumps(results[kind], indent=1), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
