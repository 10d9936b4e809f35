"""Batch jobs on top of the orchestrator: SubmitBatch, GetBatch, WatchBatch, and
running one queued item through the same path as Generate (see batch_queue.py for the
queue and the result store)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format

from headrace.router.v1 import router_pb2
from headrace.services.router.backends import Principal, Usage
from headrace.services.router.batch_queue import (
    BatchItem,
    BatchMeta,
    JobQueue,
    ResultStore,
    new_batch_id,
)
from headrace.services.router.content import Content
from headrace.services.router.orchestrator import Ask, Orchestrator
from headrace.services.router.record import Reply
from headrace.services.router.settings import RouterSettings
from headrace.services.runtime.credentials import ADMIN_SCOPE
from headrace.services.runtime.errors import HeadraceError, InvalidArgument, NotFound, status_code
from headrace.services.runtime.logs import get_logger, request_id_var
from headrace.services.runtime.params import validate_params
from headrace.types.v1 import types_pb2

log = get_logger(__name__)

# Errors that belong to the item (stored as its result) rather than to the moment
# (requeued and retried).
ITEM_ERRORS = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAUTHENTICATED,
)


class BatchJobs:
    """SubmitBatch, GetBatch, WatchBatch and running one item, on top of the orchestrator."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        queue: JobQueue,
        results: ResultStore,
        settings: RouterSettings,
    ) -> None:
        self._orchestrator = orchestrator
        self.queue = queue
        self.results = results
        self._settings = settings

    async def submit(
        self, request: router_pb2.SubmitBatchRequest, credential: str, remaining: float | None
    ) -> router_pb2.SubmitBatchResponse:
        principal = await self._orchestrator.authorize(credential, remaining)
        prompts = list(request.prompts)
        if not prompts:
            raise InvalidArgument("a batch needs at least one prompt")
        if len(prompts) > self._settings.batch_max_items:
            raise InvalidArgument(
                f"a batch takes at most {self._settings.batch_max_items} prompts; split it"
            )
        for i, prompt in enumerate(prompts):
            if not prompt.strip():
                raise InvalidArgument(f"prompt {i} is empty")
        validate_params(request.params, self._settings.max_tokens_limit)
        if request.task and request.task not in self._orchestrator.tasks.tasks:
            raise InvalidArgument(
                f"unknown task {request.task!r}; available: {', '.join(sorted(self._orchestrator.tasks.tasks))}"
            )
        batch_id = new_batch_id()
        params = json_format.MessageToDict(request.params, preserving_proto_field_name=True)
        await self.results.create(BatchMeta(batch_id, principal.subject, len(prompts)))
        await self.queue.publish(
            [
                BatchItem(
                    batch_id,
                    i,
                    prompt,
                    request.model,
                    request.task,
                    params,
                    principal.subject,
                    principal.tier,
                )
                for i, prompt in enumerate(prompts)
            ]
        )
        log.info("batch_submitted", batch=batch_id, items=len(prompts), queue=self.queue.name)
        return router_pb2.SubmitBatchResponse(batch_id=batch_id, total=len(prompts))

    async def _owned(self, batch_id: str, credential: str, remaining: float | None) -> BatchMeta:
        principal = await self._orchestrator.authorize(credential, remaining)
        meta = await self.results.meta(batch_id)
        if meta is None or (
            meta.subject != principal.subject and ADMIN_SCOPE not in principal.scopes
        ):
            raise NotFound(f"no batch {batch_id!r} of yours (results are kept for a week)")
        return meta

    async def get(
        self, batch_id: str, credential: str, remaining: float | None
    ) -> router_pb2.GetBatchResponse:
        meta = await self._owned(batch_id, credential, remaining)
        results = await self.results.results(batch_id)
        state = (
            router_pb2.BATCH_STATE_DONE
            if len(results) >= meta.total
            else router_pb2.BATCH_STATE_RUNNING
            if results
            else router_pb2.BATCH_STATE_PENDING
        )
        return router_pb2.GetBatchResponse(
            batch_id=batch_id,
            state=state,
            total=meta.total,
            done=len(results),
            results=[result_proto(i, r) for i, r in sorted(results.items())],
        )

    async def watch(
        self, batch_id: str, credential: str, remaining: float | None
    ) -> AsyncIterator[router_pb2.WatchBatchResponse]:
        meta = await self._owned(batch_id, credential, remaining)
        sent: set[int] = set()
        while len(sent) < meta.total:
            results = await self.results.results(batch_id)
            for index in sorted(set(results) - sent):
                sent.add(index)
                yield router_pb2.WatchBatchResponse(result=result_proto(index, results[index]))
            if len(sent) < meta.total:
                await asyncio.sleep(0.2)

    async def run_item(self, item: BatchItem) -> dict[str, Any]:
        """One item through the Generate path; its result, or an exception to retry."""
        request_id_var.set(f"{item.batch_id}:{item.index}")
        ask = Ask(
            Content(prompt=item.prompt),
            model=item.model,
            task=item.task,
            params=json_format.ParseDict(item.params, types_pb2.SamplingParams()),
        )
        principal = Principal(item.subject, item.tier)
        text: list[str] = []
        last = Reply()
        try:
            async for reply in self._orchestrator.generate(ask, "", None, principal=principal):
                text.append(reply.text)
                last = reply
        except (HeadraceError, grpc.aio.AioRpcError) as exc:
            code = status_code(exc)
            if code not in ITEM_ERRORS:
                raise
            message = exc.message if isinstance(exc, HeadraceError) else exc.details()
            return {"error": f"{code.name}: {message}"}
        usage = last.usage or Usage()
        return {
            "text": "".join(text),
            "finish_reason": last.finish_reason,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "model": last.model,
        }


def result_proto(index: int, result: dict[str, Any]) -> router_pb2.BatchResult:
    prompt_tokens = int(result.get("prompt_tokens", 0))
    completion_tokens = int(result.get("completion_tokens", 0))
    return router_pb2.BatchResult(
        index=index,
        text=result.get("text", ""),
        finish_reason=int(result.get("finish_reason", 0)),
        usage=types_pb2.Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
        model=result.get("model", ""),
        error=result.get("error", ""),
    )
