"""RouterService RPCs ↔ the orchestrator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.services.router.orchestrator import Orchestrator


def credential_from(context: grpc.aio.ServicerContext) -> str:
    """The bearer token or API key in the call's metadata ("" if none)."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
        if key == "x-api-key" and isinstance(value, str):
            return value.strip()
    return ""


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    """The public API."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self._orchestrator = orchestrator

    async def Generate(
        self, request: router_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.GenerateResponse]:
        stream = self._orchestrator.generate(
            request, credential_from(context), context.time_remaining()
        )
        async for response in stream:
            yield response

    async def ListModels(
        self, request: router_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.ListModelsResponse:
        await self._orchestrator.authorize(credential_from(context), context.time_remaining())
        models = await self._orchestrator.catalog.models(timeout=10.0)
        return router_pb2.ListModelsResponse(
            models=[
                router_pb2.Model(name=m.name, context_size=m.context_size, is_default=m.is_default)
                for m in models
            ]
        )
