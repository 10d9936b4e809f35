"""Block and false-positive rates of the sanitizer's injection defence on held-out sources.

    python scripts/eval_sanitizer.py [--data DIR] [--settings headrace.toml]   (make eval-sanitizer)

Reads eval.jsonl.gz written by scripts/sanitizer_data.py: only sources that
were used neither to train the classifier nor to write the rules. Each text
goes through the default tier's PromptPolicy, as CheckPrompt would run it, and
is counted as blocked by a rule, blocked by the classifier, flagged, or let
through. Prints one markdown row per family: attack families want a high
"blocked", benign families a "blocked" near 0.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import defaultdict
from pathlib import Path

from headrace.services.runtime.errors import InvalidArgument
from headrace.services.sanitizer.classifier import CLASSIFIER_SIGNAL
from headrace.services.sanitizer.settings import SanitizerSettings

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".headrace" / "sanitizer-data")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--thresholds",
        help="comma-separated classifier thresholds: also print each family's block rate "
        "at each (what a tier's injection_classifier_threshold would give)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="score with this trained artefact instead of the shipped one "
        "(the setting injection_classifier_model)",
    )
    args = parser.parse_args()
    path = args.data / "eval.jsonl.gz"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run scripts/sanitizer_data.py first")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    policy = SanitizerSettings(injection_classifier_model=args.model).policies().default

    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    sources: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        c = counts[r["family"]]
        sources[r["family"]].add(r["source"])
        c["n"] += 1
        try:
            verdict = policy.evaluate(r["text"])
        except InvalidArgument:
            c["too_large"] += 1
            continue
        if verdict.blocked is not None:
            c["blocked"] += 1
            c["by_classifier" if verdict.blocked.rule.id == CLASSIFIER_SIGNAL else "by_rules"] += 1
        elif verdict.flags:
            c["flagged"] += 1

    print("| family | source | n | blocked | by rules | by classifier only | flagged |")
    print("|---|---|---|---|---|---|---|")
    out = {}
    for family in sorted(counts, key=lambda f: (f.startswith("benign"), f)):
        c = counts[family]
        n = c["n"]
        out[family] = {k: c[k] for k in ("n", "blocked", "by_rules", "by_classifier", "flagged")}
        print(
            f"| {family} | {', '.join(sorted(sources[family]))} | {n} "
            f"| {c['blocked'] / n:.1%} ({c['blocked']}) | {c['by_rules']} "
            f"| {c['by_classifier']} | {c['flagged']} |"
        )
    dropped = args.data / "dropped.json"
    if dropped.exists():
        print(f"\nnear-copies of training texts left out of the evaluation: {dropped.read_text()}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, sort_keys=True))
    if args.thresholds:
        sweep(rows, [float(t) for t in args.thresholds.split(",")], args.model)


def sweep(
    rows: list[dict[str, object]], thresholds: list[float], model: Path | None = None
) -> None:
    """Block rate per family (rules or classifier) at each classifier threshold."""
    print("\n| family | " + " | ".join(f"blocked at {t}" for t in thresholds) + " |")
    print("|---|" + "---|" * len(thresholds))
    rates: dict[str, list[str]] = defaultdict(list)
    for t in thresholds:
        settings = SanitizerSettings(
            injection_classifier_threshold=t, injection_classifier_model=model
        )
        policy = settings.policies().default
        blocked: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r in rows:
            b = blocked[str(r["family"])]
            b[1] += 1
            try:
                b[0] += policy.evaluate(str(r["text"])).blocked is not None
            except InvalidArgument:
                pass
        for family, (k, n) in blocked.items():
            rates[family].append(f"{k / n:.1%}")
    for family in sorted(rates, key=lambda f: (f.startswith("benign"), f)):
        print(f"| {family} | " + " | ".join(rates[family]) + " |")


if __name__ == "__main__":
    main()
