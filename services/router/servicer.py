"""RouterService RPCs ↔ the orchestrator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.services.router.batch_jobs import BatchJobs
from headrace.services.router.orchestrator import Orchestrator
from headrace.services.router.tasks import fill_unset
from headrace.services.runtime.credentials import credential_from
from headrace.types.v1 import types_pb2


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    """The public API."""

    def __init__(self, orchestrator: Orchestrator, batches: BatchJobs) -> None:
        self._orchestrator = orchestrator
        self._batches = batches

    async def SubmitBatch(
        self, request: router_pb2.SubmitBatchRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.SubmitBatchResponse:
        return await self._batches.submit(
            request, credential_from(context), context.time_remaining()
        )

    async def GetBatch(
        self, request: router_pb2.GetBatchRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.GetBatchResponse:
        return await self._batches.get(
            request.batch_id, credential_from(context), context.time_remaining()
        )

    async def WatchBatch(
        self, request: router_pb2.WatchBatchRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.WatchBatchResponse]:
        stream = self._batches.watch(
            request.batch_id, credential_from(context), context.time_remaining()
        )
        async for response in stream:
            yield response

    async def Generate(
        self, request: router_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.GenerateResponse]:
        stream = self._orchestrator.generate(
            request, credential_from(context), context.time_remaining()
        )
        async for response in stream:
            if response.finish_reason and response.arm:
                context.set_trailing_metadata((("x-headrace-arm", response.arm),))
            yield response

    async def Feedback(
        self, request: router_pb2.FeedbackRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.FeedbackResponse:
        await self._orchestrator.feedback(
            credential_from(context),
            request.request_id,
            request.rating,
            request.comment,
            context.time_remaining(),
        )
        return router_pb2.FeedbackResponse()

    async def ListTasks(
        self, request: router_pb2.ListTasksRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.ListTasksResponse:
        await self._orchestrator.authorize(credential_from(context), context.time_remaining())
        tasks = []
        for name, preset in sorted(self._orchestrator.tasks.tasks.items()):
            params = fill_unset(types_pb2.SamplingParams(), preset.params.model_dump())
            tasks.append(
                router_pb2.Task(
                    name=name,
                    description=preset.description,
                    models=preset.models,
                    params=params,
                )
            )
        return router_pb2.ListTasksResponse(tasks=tasks)

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
