"""The router asks the cache only about requests it may answer: deterministic ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from headrace.cache.v1 import cache_pb2
from headrace.inference.v1 import inference_pb2
from headrace.router.v1 import router_pb2
from headrace.sanitizer.v1 import sanitizer_pb2
from headrace.services.router.audit import AuditLog
from headrace.services.router.orchestrator import Backends, Orchestrator
from headrace.services.router.settings import RouterSettings
from headrace.types.v1 import types_pb2
from tests.router.test_cache_copy import Store
from tests.router.test_router_metrics import Auth, Call, Inference, Sanitizer, Stream


class Generating(Inference):
    def Generate(self, request: inference_pb2.GenerateRequest, **_: Any) -> Stream:
        return Stream(
            [
                inference_pb2.GenerateResponse(text="fresh", model=request.model),
                inference_pb2.GenerateResponse(
                    model=request.model, finish_reason=types_pb2.FINISH_REASON_STOP
                ),
            ]
        )


class Unfiltered(Sanitizer):
    def CheckPrompt(self, request: sanitizer_pb2.CheckPromptRequest, **_: Any) -> Call:
        return Call(
            sanitizer_pb2.CheckPromptResponse(prompt=request.prompt, output_unfiltered=True)
        )


class Cache:
    """Every lookup misses; records what the router asked and stored."""

    def __init__(self) -> None:
        self.lookups: list[cache_pb2.LookupRequest] = []
        self.stores: list[Store] = []

    def Lookup(self, request: cache_pb2.LookupRequest, **_: Any) -> Stream:
        self.lookups.append(request)
        return Stream([cache_pb2.LookupResponse(hit=False)])

    def Store(self, **_: Any) -> Store:
        self.stores.append(Store())
        return self.stores[-1]


async def answer(tmp_path: Path, params: types_pb2.SamplingParams, **fields: Any) -> Cache:
    cache = Cache()
    backends = Backends(Auth(), Unfiltered(), cache, Generating())  # type: ignore[arg-type]
    router = Orchestrator(backends, RouterSettings(), AuditLog(tmp_path / "audit", queue_size=8))
    request = router_pb2.GenerateRequest(prompt="hello", params=params, **fields)
    out = [r async for r in router.generate(request, "credential", remaining=5.0)]
    assert "".join(r.text for r in out) == "fresh"
    return cache


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
    assert cache.lookups == [] and cache.stores == []


@pytest.mark.parametrize(
    "params",
    [types_pb2.SamplingParams(temperature=0.0), types_pb2.SamplingParams(seed=7)],
)
async def test_greedy_or_seeded_requests_are_looked_up_and_stored(
    tmp_path: Path, params: types_pb2.SamplingParams
) -> None:
    cache = await answer(tmp_path, params)
    assert [r.key.prompt for r in cache.lookups] == ["hello"]
    [store] = cache.stores
    assert store.messages[0].key.prompt == "hello" and store.messages[-1].complete


async def test_bypass_cache_skips_even_a_greedy_request(tmp_path: Path) -> None:
    cache = await answer(tmp_path, types_pb2.SamplingParams(temperature=0.0), bypass_cache=True)
    assert cache.lookups == [] and cache.stores == []
