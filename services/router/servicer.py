"""RouterService RPCs ↔ the orchestrator."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import grpc

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.services.router.batch_jobs import BatchJobs
from headrace.services.router.content import content_of
from headrace.services.router.orchestrator import Ask, Orchestrator
from headrace.services.router.record import Reply
from headrace.services.router.tasks import fill_unset
from headrace.services.runtime.coalesce import coalesced
from headrace.services.runtime.credentials import credential_from, within_deadline
from headrace.types.v1 import types_pb2

# ListModels waits for inference at most this long, less when the caller's deadline
# comes sooner.
LIST_MODELS_LIMIT_S = 10.0


def response_from(reply: Reply) -> router_pb2.GenerateResponse:
    """One Generate message as the client receives it."""
    response = router_pb2.GenerateResponse(
        text=reply.text,
        finish_reason=reply.finish_reason,
        cached=reply.cached,
        model=reply.model,
        request_id=reply.request_id,
        task=reply.task,
        arm=reply.arm,
        provider=reply.provider,
    )
    if reply.usage is not None:
        response.usage.prompt_tokens = reply.usage.prompt_tokens
        response.usage.completion_tokens = reply.usage.completion_tokens
        response.usage.total_tokens = reply.usage.prompt_tokens + reply.usage.completion_tokens
    return response


def merge_replies(earlier: Reply, later: Reply) -> Reply | None:
    """Two consecutive messages as one: the text of both, the rest (finish reason,
    usage) of the later; nothing follows the last message."""
    if earlier.finish_reason:
        return None
    return dataclasses.replace(later, text=earlier.text + later.text)


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
            self.ask_from(request), credential_from(context), context.time_remaining()
        )
        # A client (or Envoy) that falls behind gets the text produced meanwhile in
        # one message; one that keeps up gets every piece at once.
        async for reply in coalesced(stream, merge_replies):
            if reply.finish_reason and reply.arm:
                context.set_trailing_metadata((("x-headrace-arm", reply.arm),))
            yield response_from(reply)

    @staticmethod
    def ask_from(request: router_pb2.GenerateRequest) -> Ask:
        """A GenerateRequest in the router's terms (validated in the admit stage, so a
        malformed request is audited and counted like any other)."""
        return Ask(
            content_of(
                request.prompt,
                request.messages,
                request.response_format if request.HasField("response_format") else None,
            ),
            model=request.model,
            task=request.task,
            params=request.params,
            bypass_cache=request.bypass_cache,
        )

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
        remaining = context.time_remaining()
        await self._orchestrator.authorize(credential_from(context), remaining)
        models = await self._orchestrator.catalog.models(
            timeout=within_deadline(remaining, LIST_MODELS_LIMIT_S)
        )
        return router_pb2.ListModelsResponse(
            models=[
                router_pb2.Model(
                    name=m.name,
                    context_size=m.context_size,
                    is_default=m.is_default,
                    aliases=m.aliases,
                )
                for m in models
            ]
        )
