"""`python -m headrace.services.finetune` (what `headrace finetune` runs): train a LoRA
for a served model, check it against llama.cpp, and register it with the suite.

Its own process, never a serving one: training takes every core and gigabytes of
memory for minutes, which a serving process must not give up.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from headrace.services.finetune.data import DataError
from headrace.services.finetune.fidelity import FidelityError
from headrace.services.finetune.run import FinetuneError, FinetuneOptions, finetune
from headrace.services.finetune.training import TrainConfig


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="headrace finetune",
        description="Train a LoRA adapter for a served GGUF model on question-answer JSONL, "
        "write it as a GGUF adapter with a JSON report, and register it as a model variant "
        "(BASE:NAME) that the running suite loads without a restart.",
    )
    p.add_argument("--data", type=Path, required=True, help="JSONL: prompt/answer or messages")
    p.add_argument("--model", default="", help="the served base model (default: the default)")
    p.add_argument("--name", required=True, help="the variant's suffix: BASE:NAME")
    d = TrainConfig()
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--rank", type=int, default=d.rank, help="LoRA rank")
    p.add_argument("--alpha", type=float, default=d.alpha, help="LoRA alpha (scale alpha/rank)")
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--max-tokens", type=int, default=d.max_tokens, help="tokens per example")
    p.add_argument(
        "--lora-layers", type=int, default=None, help="adapt only the last N blocks (faster)"
    )
    p.add_argument("--eval-split", type=float, default=0.1, help="held-out share of the data")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument(
        "--no-redact",
        action="store_true",
        help="train on the data as given, without the sanitizer's PII/secret redaction",
    )
    p.add_argument(
        "--experiment",
        nargs="?",
        const="",
        default=None,
        metavar="NAME",
        help="also start an A/B experiment base vs adapter (default name: finetune-NAME)",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default under home)")
    p.add_argument("--no-register", action="store_true", help="write the adapter only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config = TrainConfig(
        epochs=args.epochs,
        rank=args.rank,
        alpha=args.alpha,
        lr=args.lr,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        max_tokens=args.max_tokens,
        lora_layers=args.lora_layers,
        seed=args.seed,
        threads=args.threads,
    )
    options = FinetuneOptions(
        data=args.data,
        model=args.model,
        name=args.name,
        config=config,
        eval_split=args.eval_split,
        redact=not args.no_redact,
        experiment=args.experiment,
        out=args.out,
        register=not args.no_register,
    )
    try:
        finetune(options)
    except (DataError, FinetuneError, FidelityError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
