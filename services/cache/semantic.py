"""The semantic cache (off by default): a prompt that is close enough in meaning to
one whose response is stored gets that response.

Prompts are embedded with a llama.cpp model (mean-pooled hidden states,
L2-normalised) and compared by cosine similarity within one scope: the same model,
sampling parameters, subject (when the cache is per subject) and task, so only the
wording may differ. A match needs `threshold` similarity. Enable it only for models
and tasks where a near-duplicate question deserves the same answer (FAQ-style
factual prompts, not code or arithmetic, where one changed token changes the
answer). The index lives in the cache process: after a restart it refills as
responses are stored. Exact matches and single-flight always come first.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headrace.services.runtime.llama_params import ExtraBufts, load_llama
from headrace.services.runtime.logs import get_logger

log = get_logger(__name__)

Embedder = Callable[[str], np.ndarray]


class LlamaEmbedder:
    """Unit-length prompt embeddings from a GGUF model, on a worker thread."""

    def __init__(
        self, model_path: Path, threads: int | None = None, extra_bufts: ExtraBufts = "auto"
    ) -> None:
        import llama_cpp

        self._llm = load_llama(
            model_path,
            extra_bufts=extra_bufts,
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            n_ctx=512,
            n_threads=threads,
            verbose=False,
        )
        self._lock = threading.Lock()  # one llama context: one embedding at a time

    def __call__(self, text: str) -> np.ndarray:
        with self._lock:
            vector = np.asarray(self._llm.embed(text, truncate=True), dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm else vector


@dataclass
class _Scope:
    keys: list[str]
    vectors: np.ndarray


class SemanticIndex:
    """Prompt embeddings by scope, with the cache key of each stored response."""

    def __init__(self, embedder: Embedder, threshold: float, max_entries: int = 10_000) -> None:
        self._embed = embedder
        self.threshold = threshold
        self._max = max_entries
        self._scopes: OrderedDict[str, _Scope] = OrderedDict()
        self._size = 0

    async def nearest(self, scope: str, prompt: str) -> tuple[str, float] | None:
        """The stored key whose prompt is most similar, if at least `threshold`."""
        entries = self._scopes.get(scope)
        if entries is None or not entries.keys:
            return None
        query = await asyncio.to_thread(self._embed, prompt)
        similarities = entries.vectors @ query
        best = int(np.argmax(similarities))
        score = float(similarities[best])
        return (entries.keys[best], score) if score >= self.threshold else None

    async def add(self, scope: str, prompt: str, key: str) -> None:
        vector = await asyncio.to_thread(self._embed, prompt)
        entries = self._scopes.get(scope)
        if entries is None:
            self._scopes[scope] = _Scope([key], vector[None, :])
        elif key not in entries.keys:
            entries.keys.append(key)
            entries.vectors = np.vstack([entries.vectors, vector])
        else:
            return
        self._size += 1
        while self._size > self._max and self._scopes:
            # Forget the oldest scope's oldest prompt first.
            oldest_scope, oldest = next(iter(self._scopes.items()))
            oldest.keys.pop(0)
            oldest.vectors = oldest.vectors[1:]
            self._size -= 1
            if not oldest.keys:
                del self._scopes[oldest_scope]
