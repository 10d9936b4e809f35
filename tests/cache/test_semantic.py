"""The semantic cache: similar prompts within one scope share a response; nothing
else ever does."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from headrace.cache.v1 import cache_pb2
from headrace.services.cache.answers import Answers
from headrace.services.cache.flights import Flights
from headrace.services.cache.responses import MemoryStore
from headrace.services.cache.semantic import LlamaEmbedder, SemanticIndex
from headrace.services.cache.servicer import CacheServicer
from headrace.types.v1 import types_pb2


def words_embedder(text: str) -> np.ndarray:
    """A bag-of-words embedding: enough to test the index, no model needed."""
    vector = np.zeros(256, dtype=np.float32)
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % 256] += 1.0
    return vector / (np.linalg.norm(vector) or 1.0)


async def test_a_rephrased_prompt_matches_and_an_unrelated_one_does_not() -> None:
    index = SemanticIndex(words_embedder, threshold=0.9)
    await index.add("scope", "What is the capital of France?", "key-1")
    match = await index.nearest("scope", "what is the capital of france")
    assert match is not None and match[0] == "key-1" and match[1] > 0.99
    assert await index.nearest("scope", "Write a poem about the sea") is None


async def test_prompts_never_match_across_scopes() -> None:
    index = SemanticIndex(words_embedder, threshold=0.5)
    await index.add("model-a", "What is the capital of France?", "key-1")
    assert await index.nearest("model-b", "What is the capital of France?") is None


async def test_the_index_forgets_the_oldest_prompts_beyond_its_size() -> None:
    index = SemanticIndex(words_embedder, threshold=0.99, max_entries=2)
    for i, prompt in enumerate(["alpha beta", "gamma delta", "epsilon zeta"]):
        await index.add("scope", prompt, f"key-{i}")
    assert await index.nearest("scope", "alpha beta") is None
    assert (await index.nearest("scope", "epsilon zeta"))[0] == "key-2"  # type: ignore[index]


def key(prompt: str, *, model: str = "tiny", max_tokens: int = 16) -> cache_pb2.CacheKey:
    return cache_pb2.CacheKey(
        model=model,
        prompt=prompt,
        params=types_pb2.SamplingParams(temperature=0.0, max_tokens=max_tokens),
    )


async def store(servicer: CacheServicer, k: cache_pb2.CacheKey, text: str) -> None:
    async def messages():  # type: ignore[no-untyped-def]
        yield cache_pb2.StoreRequest(key=k)
        yield cache_pb2.StoreRequest(text=text)
        yield cache_pb2.StoreRequest(
            complete=True,
            finish_reason=types_pb2.FINISH_REASON_STOP,
            usage=types_pb2.Usage(prompt_tokens=7, completion_tokens=2),
        )

    assert (await servicer.Store(messages(), None)).stored  # type: ignore[arg-type]


async def lookup(servicer: CacheServicer, k: cache_pb2.CacheKey) -> list[cache_pb2.LookupResponse]:
    return [m async for m in servicer.Lookup(cache_pb2.LookupRequest(key=k), None)]  # type: ignore[arg-type]


def make_servicer(models: frozenset[str] = frozenset()) -> CacheServicer:
    answers = Answers(
        SimpleNamespace(store=MemoryStore(100)),  # type: ignore[arg-type]
        Flights(10.0),
        60,
        per_subject=False,
        semantic=SemanticIndex(words_embedder, threshold=0.9),
        semantic_models=models,
    )
    return CacheServicer(answers, auth=None)  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(50):  # the index is filled by a background task
        await asyncio.sleep(0.01)


async def test_the_servicer_answers_a_similar_prompt_with_the_stored_response() -> None:
    servicer = make_servicer()
    await store(servicer, key("What is the capital of France?"), "Paris.")
    await settle()
    replay = await lookup(servicer, key("what is the capital of france"))
    assert [m.text for m in replay] == ["Paris."]
    assert replay[-1].hit and replay[-1].usage.completion_tokens == 2
    assert servicer.answers.counts["semantic"] == 1


async def test_other_params_or_a_model_not_enabled_never_match() -> None:
    servicer = make_servicer(models=frozenset({"tiny"}))
    await store(servicer, key("What is the capital of France?"), "Paris.")
    await store(servicer, key("What is the capital of Spain?", model="other"), "Madrid.")
    await settle()
    assert not (await lookup(servicer, key("what is the capital of france", max_tokens=17)))[0].hit
    assert not (await lookup(servicer, key("what is the capital of spain", model="other")))[0].hit


def test_llama_embeddings_are_unit_vectors_and_equal_for_equal_text(tiny_model: Path) -> None:
    embed = LlamaEmbedder(tiny_model)
    a, b = embed("What is the capital of France?"), embed("What is the capital of France?")
    assert a.shape[0] > 1
    assert np.isclose(np.linalg.norm(a), 1.0, atol=1e-4)
    assert float(a @ b) == pytest.approx(1.0, abs=1e-5)
