"""Training pieces without the real model: answer masks, the answer-only loss, and the
GGUF adapter's layout (what llama.cpp's loader checks)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from headrace.services.finetune.data import Example
from headrace.services.finetune.template import Message
from headrace.services.finetune.training import TrainConfig, encode

needs_torch = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "transformers", "peft")),
    reason="needs the finetune extra",
)


def chars(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_only_answer_tokens_are_marked() -> None:
    example = Example(1, (Message("user", "Q?"), Message("assistant", "A.")))
    encoded = encode(example, chars, bos=2, max_tokens=512)
    assert encoded is not None
    marked = "".join(chr(t) for t, a in zip(encoded.ids, encoded.answer, strict=True) if a)
    assert marked == "A.<end_of_turn>"
    assert encoded.ids[0] == 2 and not encoded.answer[0]


def test_an_example_cut_before_its_answer_is_dropped() -> None:
    example = Example(1, (Message("user", "a long question"), Message("assistant", "A")))
    assert encode(example, chars, bos=2, max_tokens=10) is None


def tiny_gemma():  # type: ignore[no-untyped-def]
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=128,
    )
    return Gemma3ForCausalLM(config).eval()


@needs_torch
def test_answer_loss_equals_the_full_loss_on_answer_positions() -> None:
    import torch

    from headrace.services.finetune.training import Encoded, answer_loss

    model = tiny_gemma()
    items = [
        Encoded([2, 5, 6, 7, 8, 9], [False, False, False, True, True, False]),
        Encoded([2, 10, 11, 12], [False, False, True, True]),
    ]
    with torch.no_grad():
        loss = answer_loss(model, items, pad=0)
    expected = 0.0
    with torch.no_grad():
        for e in items:
            logits = model(input_ids=torch.tensor([e.ids])).logits[0]
            for t in range(1, len(e.ids)):
                if e.answer[t]:
                    expected += float(
                        torch.nn.functional.cross_entropy(logits[t - 1], torch.tensor(e.ids[t]))
                    )
    assert loss.item() == pytest.approx(expected, rel=1e-4)


@needs_torch
def test_the_adapter_has_llama_cpp_names_shapes_and_metadata(tmp_path: Path) -> None:
    import gguf

    from headrace.services.finetune.adapter import write_gguf_lora
    from headrace.services.finetune.training import add_lora

    model = add_lora(tiny_gemma(), TrainConfig(rank=4, alpha=8, lora_layers=2))
    path = tmp_path / "adapter.gguf"
    written = write_gguf_lora(model, 8.0, "gemma3", path)
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == 8.0
    assert reader.fields["general.architecture"].contents() == "gemma3"
    tensors = {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors}
    assert written == len(tensors) == 2 * 7 * 2  # A and B, 7 projections, last 2 blocks
    assert not any(name.startswith("blk.0.") for name in tensors)
    # ggml order (reversed numpy): A is [in, rank], B is [rank, out].
    assert tensors["blk.2.attn_q.weight.lora_a"] == (32, 4)
    assert tensors["blk.2.attn_q.weight.lora_b"] == (4, 2 * 16)
    assert tensors["blk.1.ffn_down.weight.lora_a"] == (64, 4)
    assert tensors["blk.1.ffn_down.weight.lora_b"] == (4, 32)


def test_fidelity_counts_exact_picks_and_near_ties_but_not_real_disagreements() -> None:
    import numpy as np

    from headrace.services.finetune.fidelity import agreement

    logits = np.array([[5.0, 4.9, 0.0], [5.0, 1.0, 0.0], [0.0, 2.0, 7.0]], dtype=np.float32)
    # llama.cpp picks: 1 (a near tie with 0), 1 (a real disagreement), 2 (exact).
    result = agreement([logits], [[1, 1, 2]])
    assert (result.positions, result.agreeing) == (3, 2)
    assert agreement([logits], [[1, 1, 2]], tie=0.0).agreeing == 1
