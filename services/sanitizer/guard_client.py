"""The guard model's call: inference.Generate through Envoy's internal listener,
read as a one-word verdict within the tier's budget (see guard.py)."""

from __future__ import annotations

import asyncio

import grpc

from headrace.inference.v1 import inference_pb2, inference_pb2_grpc
from headrace.services.runtime.interceptors import outgoing_metadata
from headrace.services.sanitizer.guard import GuardPolicy, GuardVerdict, read_answer
from headrace.types.v1 import types_pb2


class GuardClient:
    """inference.Generate as a yes/no classifier, within a budget."""

    def __init__(self, stub: inference_pb2_grpc.InferenceServiceStub) -> None:
        self._stub = stub

    async def judge(self, policy: GuardPolicy, text: str) -> GuardVerdict:
        """The guard's verdict on text; UNKNOWN past the budget or on any error."""
        request = inference_pb2.GenerateRequest(
            model=policy.model,
            prompt=policy.prompt.replace("{prompt}", text),
            params=types_pb2.SamplingParams(max_tokens=policy.max_tokens, temperature=0.0),
        )
        try:
            async with asyncio.timeout(policy.budget_s):
                answer = await self._answer(request, policy.budget_s)
        except (TimeoutError, grpc.aio.AioRpcError):
            return GuardVerdict.UNKNOWN
        return read_answer(answer, policy)

    async def _answer(self, request: inference_pb2.GenerateRequest, budget_s: float) -> str:
        call = self._stub.Generate(request, timeout=budget_s, metadata=outgoing_metadata())
        pieces = []
        try:
            async for piece in call:
                pieces.append(piece.text)
                if any(c.isalpha() for c in "".join(pieces)) and piece.text.endswith(
                    (" ", "\n", ".", ",")
                ):
                    break  # the first word is all we read
        finally:
            call.cancel()
        return "".join(pieces)
