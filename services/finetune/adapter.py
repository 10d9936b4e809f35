"""The trained LoRA as a GGUF adapter that llama.cpp loads (`llama_adapter_lora_init`).

The layout is the one llama.cpp's convert_lora_to_gguf.py writes: `general.type =
adapter`, `adapter.type = lora`, `adapter.lora.alpha`, the base model's architecture,
and for each adapted weight `<base tensor>.lora_a` (rank x in) and `.lora_b`
(out x rank) in float32. llama.cpp applies `scale * alpha / rank * B @ A`, which is
PEFT's `alpha / rank` scaling, so the numbers carry over unchanged. Gemma 3's
projections need no permutation (llama.cpp runs its rotary embedding in the NeoX
layout Hugging Face uses).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from headrace.services.finetune.training import TARGET_MODULES

if TYPE_CHECKING:
    import torch

_NAME = re.compile(
    r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.(?:\w+\.)?weight$",
)


def lora_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """llama.cpp tensor name → LoRA weight, for every adapted projection of the model."""
    out: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        if "lora_" not in name:
            continue
        match = _NAME.search(name)
        if match is None or match.group(2) not in TARGET_MODULES:
            raise ValueError(f"no llama.cpp tensor for the LoRA weight {name}")
        block, module, half = match.groups()
        out[f"blk.{block}.{TARGET_MODULES[module]}.weight.lora_{half.lower()}"] = param.detach()
    if not out:
        raise ValueError("the model has no LoRA weights")
    return out


def write_gguf_lora(model: torch.nn.Module, alpha: float, architecture: str, path: Path) -> int:
    """Write the adapter; returns the number of tensors written."""
    import gguf
    import numpy as np

    tensors = lora_tensors(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), architecture)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for name, tensor in sorted(tensors.items()):
        writer.add_tensor(name, np.ascontiguousarray(tensor.float().numpy()))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(path)  # a watcher never sees half a file
    return len(tensors)
