"""The whole `headrace finetune` run, step by step: data → checks → training → adapter
→ checks → registry. Every step that can fail on the user's input runs before the
expensive ones (the data is validated before PyTorch is even imported)."""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from headrace.services.finetune import data as dataset
from headrace.services.finetune import fidelity, training, variants
from headrace.services.finetune.adapter import write_gguf_lora
from headrace.services.finetune.training import Encoded, TrainConfig

FIDELITY_SEQUENCES = 16


class FinetuneError(RuntimeError):
    """The run cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class FinetuneOptions:
    data: Path
    name: str
    model: str = ""
    config: TrainConfig = field(default_factory=TrainConfig)
    eval_split: float = 0.1
    redact: bool = True
    experiment: str | None = None
    """None: no experiment; "": the default name (finetune-NAME)."""
    out: Path | None = None
    register: bool = True


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def base_model(name: str) -> tuple[dict[str, Any], Path, Path]:
    """The served model's spec (as a dict), its GGUF file and the suite's home."""
    from headrace.services.inference.registry import resolve_path
    from headrace.services.inference.settings import InferenceSettings

    settings = InferenceSettings()
    wanted = name or settings.default_model or settings.models[0].name
    for spec in settings.models:
        if wanted == spec.name or wanted in spec.aliases:
            return spec.model_dump(mode="json"), resolve_path(spec, settings.home), settings.home
    served = ", ".join(s.name for s in settings.models)
    raise FinetuneError(f"--model {wanted!r} is not a served model; served: {served}")


class LlamaTokenizer:
    """llama.cpp's tokenizer of the GGUF (vocabulary only): the token ids the server uses."""

    def __init__(self, gguf: Path) -> None:
        from headrace.services.runtime.llama_params import load_llama

        self._llm = load_llama(gguf, vocab_only=True, verbose=False)
        self.bos = int(self._llm.token_bos())

    def __call__(self, text: str) -> list[int]:
        return self._llm.tokenize(text.encode(), add_bos=False, special=True)


def encode_all(
    examples: list[dataset.Example], tokenizer: LlamaTokenizer, max_tokens: int
) -> list[Encoded]:
    out = []
    for example in examples:
        encoded = training.encode(example, tokenizer, tokenizer.bos, max_tokens)
        if encoded is None:
            say(f"warning: line {example.line}: no answer token within --max-tokens; skipped")
        else:
            out.append(encoded)
    return out


def finetune(options: FinetuneOptions) -> dict[str, Any]:
    """Run it all; returns the report (also written as report.json next to the adapter)."""
    started = time.perf_counter()
    config = options.config
    examples = dataset.read_examples(options.data)
    data_hash = dataset.data_hash(options.data)
    redaction = None
    if options.redact:
        examples, redaction = dataset.redact_examples(examples)
        if redaction.examples:
            say(
                f"warning: redacted secrets/PII in {redaction.examples} example(s) "
                f"({', '.join(redaction.rules)}); --no-redact trains on the data as given"
            )
    train_examples, eval_examples = dataset.split(examples, options.eval_split, config.seed)

    spec, gguf, home = base_model(options.model)
    variant = f"{spec['name']}:{options.name}"
    out = options.out or home / "adapters" / variants.file_stem(variant)
    tokenizer = LlamaTokenizer(gguf)
    train_set = encode_all(train_examples, tokenizer, config.max_tokens)
    eval_set = encode_all(eval_examples, tokenizer, config.max_tokens)
    if not train_set:
        raise FinetuneError("no training example has an answer token within --max-tokens")
    say(
        f"{len(train_set)} training and {len(eval_set)} held-out examples; "
        f"base {spec['name']} ({gguf.name}); variant {variant}"
    )

    try:
        import peft  # noqa: F401
        import torch
        import transformers  # noqa: F401
        from tqdm import tqdm  # transformers' own dependency
    except ImportError as exc:
        raise FinetuneError(
            f"training needs the finetune extra ({exc.name} is missing): "
            "pip install 'headrace[finetune]' (docs/finetune.md)"
        ) from None

    threads = training.threads(config)
    model = training.load_model(gguf, config)
    sample = [e.ids for e in (eval_set + train_set)[:FIDELITY_SEQUENCES]]
    before = fidelity.check("before training", model, gguf, sample, None, threads)
    say(f"fidelity before training: {before.rate:.1%} of {before.positions} positions agree")

    pad = 0
    eval_before = training.evaluate(model, eval_set, pad, config.batch_size)
    model = training.add_lora(model, config)
    steps = training.planned_steps(len(train_set), config)
    with tqdm(total=steps, desc="training", unit="step", file=sys.stderr, disable=False) as bar:

        def on_step(step: int, total: int, loss: float) -> None:
            bar.set_postfix(loss=f"{loss:.3f}")
            bar.update(1)

        result = training.train(model, train_set, config, pad, on_step)
    eval_after = training.evaluate(model, eval_set, pad, config.batch_size)
    say(f"held-out loss per answer token: {eval_before:.4f} before, {eval_after:.4f} after")

    adapter = out / "adapter.gguf"
    architecture = _architecture(gguf)
    with torch.no_grad():
        tensors = write_gguf_lora(model, config.alpha, architecture, adapter)
    merged = model.merge_and_unload()
    after = fidelity.check("after training", merged, gguf, sample, adapter, threads)
    say(f"fidelity after training: {after.rate:.1%} of {after.positions} positions agree")

    report: dict[str, Any] = {
        "variant": variant,
        "base_model": spec["name"],
        "base_gguf": str(gguf),
        "adapter": str(adapter.resolve()),
        "adapter_tensors": tensors,
        "data": str(options.data),
        "data_sha256": data_hash,
        "examples": {"train": len(train_set), "eval": len(eval_set)},
        "redaction": asdict(redaction) if redaction else None,
        "config": asdict(config),
        "steps": result.steps,
        "train_losses": result.losses,
        "eval_loss_before": eval_before,
        "eval_loss_after": eval_after,
        "fidelity_before": before.as_dict(),
        "fidelity_after": after.as_dict(),
        "train_seconds": round(result.seconds, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "threads": threads,
    }
    if options.register:
        path = variants.write_variant(home, variants.variant_spec(spec, variant, adapter))
        report["registry_file"] = str(path)
        say(f"registered {variant} in {path}; a running suite loads it within seconds")
        if options.experiment is not None:
            name = options.experiment or f"finetune-{options.name}"
            exp = variants.write_experiment(home, name, spec["name"], variant)
            report["experiment"] = name
            report["experiment_file"] = str(exp)
            say(f"experiment {name}: {spec['name']} vs {variant}, 50/50 ({exp})")
            say(f"  judge it with: headrace experiments report {name}")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    say(f"wrote {adapter} and {out / 'report.json'}")
    return report


def _architecture(gguf: Path) -> str:
    import gguf as gguf_lib

    reader = gguf_lib.GGUFReader(str(gguf))
    field = reader.fields["general.architecture"]
    return str(field.contents())
