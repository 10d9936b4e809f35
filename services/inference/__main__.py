"""`python -m headrace.services.inference`: run one inference replica."""

from __future__ import annotations

import asyncio

import grpc

from headrace.inference.v1 import inference_pb2, inference_pb2_grpc
from headrace.services.inference.registry import ModelRegistry
from headrace.services.inference.servicer import InferenceServicer
from headrace.services.inference.settings import InferenceSettings
from headrace.services.runtime.server import Service, run


async def make_service() -> Service:
    settings = InferenceSettings()
    # Models load once, before the server reports SERVING, off the event loop.
    registry = await asyncio.to_thread(
        ModelRegistry.load,
        settings.models,
        settings.default_model,
        settings.home,
        settings.slots,
        settings.queue_size,
        settings.stream_buffer_tokens,
    )

    async def register(server: grpc.aio.Server) -> list[str]:
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(
            InferenceServicer(registry, settings.max_tokens_limit), server
        )
        return [inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name]

    async def close() -> None:
        await asyncio.to_thread(registry.close)

    return Service("inference", settings, register, close=close)


if __name__ == "__main__":
    run(make_service, "inference")
