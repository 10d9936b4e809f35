"""InferenceService RPCs ↔ the model registry and engines."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc

from headrace.inference.v1 import inference_pb2, inference_pb2_grpc
from headrace.services.inference.engine import (
    Conversation,
    Delta,
    FinishReason,
    Hold,
    Sampling,
    SpeculationDropped,
)
from headrace.services.inference.registry import ModelRegistry
from headrace.services.inference.structured import grammar_for
from headrace.services.runtime import tracing
from headrace.services.runtime.chat_template import ROLE_NAMES
from headrace.services.runtime.coalesce import coalesced
from headrace.services.runtime.errors import InvalidArgument
from headrace.services.runtime.logs import get_logger
from headrace.services.runtime.params import validate_params
from headrace.types.v1 import types_pb2

log = get_logger(__name__)

_FINISH = {
    FinishReason.STOP: types_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: types_pb2.FINISH_REASON_LENGTH,
    FinishReason.CANCELLED: types_pb2.FINISH_REASON_CANCELLED,
}


def sampling_from_proto(params: types_pb2.SamplingParams, default_max_tokens: int) -> Sampling:
    """Proto params → Sampling, unset fields taking the engine defaults."""
    defaults = Sampling(max_tokens=default_max_tokens)
    return Sampling(
        max_tokens=params.max_tokens if params.HasField("max_tokens") else defaults.max_tokens,
        temperature=params.temperature if params.HasField("temperature") else defaults.temperature,
        top_p=params.top_p if params.HasField("top_p") else defaults.top_p,
        top_k=params.top_k if params.HasField("top_k") else defaults.top_k,
        repeat_penalty=params.repeat_penalty
        if params.HasField("repeat_penalty")
        else defaults.repeat_penalty,
        seed=params.seed if params.HasField("seed") else None,
        stop=tuple(params.stop),
    )


def conversation_from_proto(messages: list[types_pb2.ChatMessage]) -> Conversation:
    """Turns as the chat template reads them; InvalidArgument for an unknown role."""
    turns = []
    for index, message in enumerate(messages):
        role = ROLE_NAMES.get(message.role)
        if role is None:
            raise InvalidArgument(
                f"messages[{index}] has role {message.role}; use ROLE_SYSTEM, ROLE_USER "
                "or ROLE_ASSISTANT"
            )
        turns.append({"role": role, "content": message.content})
    return turns


def merge_deltas(earlier: Delta, later: Delta) -> Delta | None:
    """Two consecutive deltas as one (the later's finish and usage); none after the last."""
    if earlier.finish_reason is not None:
        return None
    return replace(later, text=earlier.text + later.text)


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    """Streams generations from the registry's engines."""

    def __init__(self, registry: ModelRegistry, max_tokens_limit: int) -> None:
        self._registry = registry
        self._max_tokens_limit = max_tokens_limit

    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb2.GenerateResponse]:
        async for response in self._generate(request):
            yield response

    async def Speculate(
        self,
        requests: AsyncIterator[inference_pb2.SpeculateRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[inference_pb2.SpeculateResponse]:
        first = await anext(aiter(requests), None)
        if first is None or not first.HasField("request") or first.commit:
            raise InvalidArgument("Speculate's first message carries the request, not a commit")
        hold = Hold()

        async def await_commit() -> None:
            async for message in requests:
                if message.commit:
                    hold.commit()
                    return
            hold.cancel()  # the request stream closed without a commit

        watcher = asyncio.create_task(await_commit())
        try:
            async for response in self._generate(first.request, hold):
                yield inference_pb2.SpeculateResponse(response=response)
        except SpeculationDropped as exc:
            await context.abort(grpc.StatusCode.ABORTED, f"{exc}; generate afresh")
        finally:
            watcher.cancel()

    async def _generate(
        self, request: inference_pb2.GenerateRequest, hold: Hold | None = None
    ) -> AsyncIterator[inference_pb2.GenerateResponse]:
        """The generation's messages, shared by Generate and a committed Speculate."""
        engine = self._registry.get(request.model)
        validate_params(request.params, self._max_tokens_limit)
        sampling = sampling_from_proto(request.params, engine.spec.default_max_tokens)
        if request.HasField("response_format"):
            sampling = replace(sampling, grammar=grammar_for(request.response_format))
        source: str | Conversation = request.prompt
        if request.messages:
            if request.prompt:
                raise InvalidArgument("set either prompt or messages, not both")
            source = conversation_from_proto(list(request.messages))
        span = tracing.current_span()
        # Deltas decoded while the router (or Envoy) was behind travel as one message.
        deltas = (
            engine.generate(source, sampling)
            if hold is None
            else engine.generate(source, sampling, hold)
        )
        async for delta in coalesced(deltas, merge_deltas):
            if delta.finish_reason is None:
                if span is not None and delta.text:
                    span.add_event("first_token")
                    span = None
                yield inference_pb2.GenerateResponse(text=delta.text, model=engine.name)
                continue
            if (span := tracing.current_span()) is not None:
                span.set_attributes(
                    {
                        "headrace.model": engine.name,
                        "headrace.finish_reason": delta.finish_reason.value,
                        "headrace.prompt_tokens": delta.prompt_tokens,
                        "headrace.completion_tokens": delta.completion_tokens,
                    }
                )
            log.info(
                "generation_finished",
                model=engine.name,
                finish_reason=delta.finish_reason.value,
                prompt_tokens=delta.prompt_tokens,
                completion_tokens=delta.completion_tokens,
            )
            yield inference_pb2.GenerateResponse(
                text=delta.text,
                model=engine.name,
                finish_reason=_FINISH[delta.finish_reason],
                usage=types_pb2.Usage(
                    prompt_tokens=delta.prompt_tokens,
                    completion_tokens=delta.completion_tokens,
                    total_tokens=delta.prompt_tokens + delta.completion_tokens,
                ),
            )

    async def ListModels(
        self, request: inference_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.ListModelsResponse:
        models = sorted(
            self._registry.engines.values(), key=lambda e: e.name != self._registry.default
        )
        return inference_pb2.ListModelsResponse(
            models=[
                inference_pb2.ModelInfo(
                    name=e.name,
                    context_size=e.context_size,
                    is_default=e.name == self._registry.default,
                    gpu_layers=e.gpu_layers,
                    revision=e.revision,
                    aliases=e.spec.aliases,
                )
                for e in models
            ]
        )
