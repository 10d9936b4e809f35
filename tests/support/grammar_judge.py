"""llama.cpp's own grammar sampler as a judge of what a schema's grammar lets through.

The tiny model's byte-fallback vocabulary offers one byte token at a time, so any text
can be offered and the verdict does not depend on how a tokenizer splits it.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from headrace.services.inference.structured import schema_grammar
from tests.support.tiny_model import EOS_ID, FIRST_BYTE_ID


@contextmanager
def grammar_engine(model: Path) -> Iterator[object]:
    """A one-slot engine over the tiny model, whose grammar samplers judge."""
    from headrace.services.inference.engine import LlamaEngine
    from headrace.services.inference.settings import ModelSpec

    engine = LlamaEngine(ModelSpec(name="tiny-judge", path=model), model, slots=1, queue_size=1)
    try:
        yield engine
    finally:
        engine.close()


class Judge:
    """llama.cpp's grammar sampler over byte tokens, for one JSON Schema."""

    def __init__(self, engine: object, schema: dict[str, Any]) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self._sampler = engine.grammar_sampler(schema_grammar(json.dumps(schema)))  # type: ignore[attr-defined]

    def close(self) -> None:
        self._llama_cpp.llama_sampler_free(self._sampler)

    def allowed(self, tokens: list[int]) -> list[int]:
        import numpy as np

        from headrace.services.inference.engine import _TOKEN_DATA, _token_array

        data = np.array([(t, 1.0, 0.0) for t in tokens], dtype=_TOKEN_DATA)
        self._llama_cpp.llama_sampler_apply(self._sampler, ctypes.byref(_token_array(data)))
        return [int(t) for t in data["id"][np.isfinite(data["logit"])]]

    def accept(self, token: int) -> None:
        self._llama_cpp.llama_sampler_accept(self._sampler, token)


def accepts_json(engine: object, schema: dict[str, Any], text: str) -> bool:
    """Whether the schema's grammar lets the model write exactly `text` (then stop)."""
    judge = Judge(engine, schema)
    try:
        for byte in text.encode():
            if not judge.allowed([FIRST_BYTE_ID + byte]):
                return False
            judge.accept(FIRST_BYTE_ID + byte)
        return bool(judge.allowed([EOS_ID]))
    finally:
        judge.close()
