"""InferenceService for hosted models: protobuf ↔ the hosted registry."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import grpc

from headrace.inference.v1 import inference_pb2, inference_pb2_grpc
from headrace.services.runtime.chat_template import ROLE_NAMES
from headrace.services.runtime.errors import InvalidArgument
from headrace.services.runtime.params import validate_params
from headrace.services.upstream.registry import Ask, HostedRegistry
from headrace.services.upstream.settings import HostedModel
from headrace.types.v1 import types_pb2

_FINISH = {
    "stop": types_pb2.FINISH_REASON_STOP,
    "length": types_pb2.FINISH_REASON_LENGTH,
    "content_filter": types_pb2.FINISH_REASON_CONTENT_FILTER,
}


def messages_of(request: inference_pb2.GenerateRequest) -> list[dict[str, str]]:
    """The conversation as OpenAI messages; a plain prompt is one user message."""
    if request.messages:
        return [
            {"role": ROLE_NAMES.get(m.role, "user"), "content": m.content} for m in request.messages
        ]
    return [{"role": "user", "content": request.prompt}]


def response_format_of(fmt: types_pb2.ResponseFormat, spec: HostedModel) -> dict | None:
    """OpenAI's response_format (or llama.cpp's `grammar`) for a constraint the provider
    honours; INVALID_ARGUMENT for one it does not, so that it never reaches it."""
    which = fmt.WhichOneof("format")
    if which is None:
        return None
    if which == "json_object":
        return {"type": "json_object"}
    if which == "json_schema":
        if not spec.supports_json_schema:
            raise InvalidArgument(
                f"hosted model {spec.name!r} cannot honour a JSON Schema "
                "(supports_json_schema is false); use a local model"
            )
        return {
            "type": "json_schema",
            "json_schema": {
                "name": "response",
                "schema": json.loads(fmt.json_schema),
                "strict": True,
            },
        }
    raise InvalidArgument(
        f"hosted model {spec.name!r} cannot honour a raw grammar; use a local model"
    )


def ask_of(request: inference_pb2.GenerateRequest, spec: HostedModel, default_max: int) -> Ask:
    p = request.params
    max_tokens = p.max_tokens if p.HasField("max_tokens") else default_max
    options: dict[str, object] = {
        "max_tokens": max_tokens,
        "temperature": p.temperature if p.HasField("temperature") else None,
        "top_p": p.top_p if p.HasField("top_p") else None,
        "seed": p.seed if p.HasField("seed") else None,
        "stop": list(p.stop) or None,
    }
    if request.response_format.WhichOneof("format") == "grammar":
        if not spec.supports_grammar:
            response_format_of(request.response_format, spec)  # raises
        options["grammar"] = request.response_format.grammar
    else:
        options["response_format"] = response_format_of(request.response_format, spec)
    return Ask(messages_of(request), options, max_tokens)


class UpstreamServicer(inference_pb2_grpc.InferenceServiceServicer):
    """Streams hosted models' answers as inference does local ones."""

    def __init__(self, registry: HostedRegistry, max_tokens_limit: int) -> None:
        self._registry = registry
        self._max_tokens_limit = max_tokens_limit

    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb2.GenerateResponse]:
        upstream = self._registry.get(request.model)
        spec = upstream.spec
        validate_params(request.params, self._max_tokens_limit)
        ask = ask_of(request, spec, min(256, self._max_tokens_limit))
        async for delta in self._registry.generate(upstream, ask):
            reply = inference_pb2.GenerateResponse(
                text=delta.text, model=spec.name, provider=spec.provider
            )
            if delta.finish_reason is not None:
                reply.finish_reason = _FINISH.get(delta.finish_reason, types_pb2.FINISH_REASON_STOP)
                reply.usage.CopyFrom(
                    types_pb2.Usage(
                        prompt_tokens=delta.prompt_tokens,
                        completion_tokens=delta.completion_tokens,
                        total_tokens=delta.prompt_tokens + delta.completion_tokens,
                    )
                )
            yield reply

    async def ListModels(
        self, request: inference_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.ListModelsResponse:
        return inference_pb2.ListModelsResponse(
            models=[
                inference_pb2.ModelInfo(
                    name=u.spec.name,
                    context_size=u.spec.context_size,
                    aliases=u.spec.aliases,
                    provider=u.spec.provider,
                    hosted=True,
                    supports_json_schema=u.spec.supports_json_schema,
                    supports_grammar=u.spec.supports_grammar,
                )
                for u in self._registry.upstreams
            ]
        )
