"""LoRA training on the dequantised GGUF weights, loss on answer tokens only.

The model comes from the served GGUF file itself (transformers dequantises it), so
the adapter is trained on the weights llama.cpp serves, not on some other release of
the model. Text is tokenised by llama.cpp's own tokenizer, from the same file, so
training sees exactly the token ids the server will.

Gemma 3 270M's tied output head (262k x 640) is most of its parameters: applying it
to every position would cost more than the rest of the network. The loss needs it
only where an answer token is predicted, so the head runs on those positions alone.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from headrace.services.finetune.data import Example
from headrace.services.finetune.template import render_gemma

if TYPE_CHECKING:
    import torch

# Hugging Face module names → llama.cpp tensor names (per block).
TARGET_MODULES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    rank: int = 8
    alpha: float = 16.0
    lr: float = 1e-3
    max_steps: int | None = None
    batch_size: int = 8
    max_tokens: int = 512
    """Tokens per example; longer ones are cut (their answer tokens beyond it are lost)."""
    lora_layers: int | None = None
    """Adapt only the last N transformer blocks (fewer blocks to backpropagate through:
    faster, less capacity); None adapts all."""
    seed: int = 0
    threads: int | None = None


@dataclass(frozen=True)
class Encoded:
    """One example as token ids, and which positions hold answer tokens."""

    ids: list[int]
    answer: list[bool]


Tokenize = Callable[[str], list[int]]


def encode(example: Example, tokenize: Tokenize, bos: int, max_tokens: int) -> Encoded | None:
    """The example rendered with the chat template and tokenised piece by piece (the
    served prompt ends at "<start_of_turn>model\\n", so the answer's tokens start
    there too); None when no answer token fits in max_tokens."""
    ids, answer = [bos], [False]
    for text, is_answer in render_gemma(example.messages, add_generation_prompt=False):
        piece = tokenize(text)
        ids.extend(piece)
        answer.extend([is_answer] * len(piece))
    ids, answer = ids[:max_tokens], answer[:max_tokens]
    return Encoded(ids, answer) if any(answer) else None


def _batch(items: Sequence[Encoded], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(e.ids) for e in items)
    ids = torch.full((len(items), width), pad, dtype=torch.long)
    attention = torch.zeros((len(items), width), dtype=torch.long)
    answer = torch.zeros((len(items), width), dtype=torch.bool)
    for row, e in enumerate(items):
        ids[row, : len(e.ids)] = torch.tensor(e.ids)
        attention[row, : len(e.ids)] = 1
        answer[row, : len(e.answer)] = torch.tensor(e.answer)
    return ids, attention, answer


def answer_loss(model: torch.nn.Module, items: Sequence[Encoded], pad: int) -> torch.Tensor:
    """Summed cross-entropy over the answer tokens of a batch; the output head runs
    only on the positions that predict one."""
    import torch

    ids, attention, answer = _batch(items, pad)
    causal_lm = _causal_lm(model)
    hidden = causal_lm.model(input_ids=ids, attention_mask=attention).last_hidden_state
    predicts = answer[:, 1:]  # position t predicts token t + 1
    logits = causal_lm.lm_head(hidden[:, :-1][predicts])
    softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return torch.nn.functional.cross_entropy(logits.float(), ids[:, 1:][predicts], reduction="sum")


def _causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The *ForCausalLM module under a PEFT wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if get_base is not None else model


def evaluate(model: torch.nn.Module, items: Sequence[Encoded], pad: int, batch_size: int) -> float:
    """Mean loss per answer token (nan for no items)."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            total += float(answer_loss(model, chunk, pad))
            count += sum(sum(e.answer[1:]) for e in chunk)
    return total / count if count else math.nan


def threads(config: TrainConfig) -> int:
    return config.threads or os.cpu_count() or 1


def load_model(gguf: Path, config: TrainConfig) -> torch.nn.Module:
    """The GGUF's weights dequantised to float32, as a transformers model."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads(config))
    hf_logging.disable_progress_bar()
    # The GGUF loader's own per-tensor bar (plain tqdm) honours only TQDM_DISABLE.
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    finally:
        if previous is None:
            del os.environ["TQDM_DISABLE"]
        else:
            os.environ["TQDM_DISABLE"] = previous
    model.eval()
    return model


def add_lora(model: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    """The model with fresh LoRA weights on every projection of the adapted blocks."""
    from peft import LoraConfig, get_peft_model

    n_layers = model.config.num_hidden_layers
    layers = None
    if config.lora_layers is not None:
        first = max(n_layers - config.lora_layers, 0)
        layers = list(range(first, n_layers))
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=0.0,
        target_modules=list(TARGET_MODULES),
        layers_to_transform=layers,
        bias="none",
    )
    return get_peft_model(model, lora)


@dataclass
class TrainResult:
    steps: int = 0
    losses: list[float] = field(default_factory=list)
    """Mean loss per answer token of each step."""
    seconds: float = 0.0


def planned_steps(n_train: int, config: TrainConfig) -> int:
    per_epoch = math.ceil(n_train / config.batch_size)
    steps = per_epoch * config.epochs
    return min(steps, config.max_steps) if config.max_steps else steps


def train(
    model: torch.nn.Module,
    items: Sequence[Encoded],
    config: TrainConfig,
    pad: int,
    on_step: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """AdamW over the LoRA weights, linear warm-up then cosine decay; shuffled each epoch."""
    import torch

    torch.manual_seed(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    total = planned_steps(len(items), config)
    warmup = max(1, total // 10)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    rng = random.Random(config.seed)
    result = TrainResult()
    started = time.perf_counter()
    model.train()
    order: list[Encoded] = []
    while result.steps < total:
        if not order:
            order = list(items)
            rng.shuffle(order)
        batch, order = order[: config.batch_size], order[config.batch_size :]
        tokens = sum(sum(e.answer[1:]) for e in batch)
        loss = answer_loss(model, batch, pad) / max(tokens, 1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        result.steps += 1
        value = loss.detach().item()
        result.losses.append(value)
        if on_step is not None:
            on_step(result.steps, total, value)
    model.eval()
    result.seconds = time.perf_counter() - started
    return result
