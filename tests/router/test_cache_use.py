"""The router asks the cache only about requests it may answer: deterministic ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from headrace.services.router.content import Content
from headrace.services.router.orchestrator import Ask
from headrace.types.v1 import types_pb2
from tests.router.fakes import FakeCache, Fakes


async def answer(tmp_path: Path, params: types_pb2.SamplingParams, **fields: Any) -> FakeCache:
    fakes = Fakes()
    router = fakes.orchestrator(tmp_path)
    ask = Ask(Content(prompt="hello"), params=params, **fields)
    out = [r async for r in router.generate(ask, "credential", remaining=5.0)]
    assert "".join(r.text for r in out) == "fresh"
    return fakes.cache


@pytest.mark.parametrize(
    "params",
    [
        types_pb2.SamplingParams(),  # the default temperature, 0.8, and no seed
        types_pb2.SamplingParams(temperature=0.5),
    ],
)
async def test_sampling_without_a_seed_neither_looks_up_nor_stores(
    tmp_path: Path, params: types_pb2.SamplingParams
) -> None:
    cache = await answer(tmp_path, params)
    assert cache.lookups == [] and cache.copies == []


@pytest.mark.parametrize(
    "params",
    [types_pb2.SamplingParams(temperature=0.0), types_pb2.SamplingParams(seed=7)],
)
async def test_greedy_or_seeded_requests_are_looked_up_and_stored(
    tmp_path: Path, params: types_pb2.SamplingParams
) -> None:
    cache = await answer(tmp_path, params)
    assert [k.content.prompt for k in cache.lookups] == ["hello"]
    [copy] = cache.copies
    assert copy.key is not None and copy.key.content.prompt == "hello"
    assert copy.texts == ["fresh"] and copy.final is not None


async def test_bypass_cache_skips_even_a_greedy_request(tmp_path: Path) -> None:
    cache = await answer(tmp_path, types_pb2.SamplingParams(temperature=0.0), bypass_cache=True)
    assert cache.lookups == [] and cache.copies == []


async def test_a_cache_that_did_not_answer_still_gets_the_copy_on_a_store_of_its_own(
    tmp_path: Path,
) -> None:
    fakes = Fakes()
    fakes.cache.unanswered = True
    router = fakes.orchestrator(tmp_path)
    ask = Ask(Content(prompt="hello"), params=types_pb2.SamplingParams(temperature=0.0))
    out = [r async for r in router.generate(ask, "credential", remaining=5.0)]
    assert "".join(r.text for r in out) == "fresh"
    [copy] = fakes.cache.copies  # made by cache.copy (Store), not by the Answer call
    assert copy.texts == ["fresh"] and copy.final is not None
