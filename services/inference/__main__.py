"""`python -m headrace.services.inference`: run one inference replica."""

from __future__ import annotations

import asyncio

import grpc

from headrace.inference.v1 import inference_pb2, inference_pb2_grpc
from headrace.services.inference.models_dir import ModelsDir, watch
from headrace.services.inference.registry import ModelRegistry
from headrace.services.inference.servicer import InferenceServicer
from headrace.services.inference.settings import InferenceSettings
from headrace.services.inference.warmup import warm_up
from headrace.services.runtime.server import Service, run


async def make_service() -> Service:
    settings = InferenceSettings()
    models_dir = ModelsDir(settings.home / "models.d")
    names = {n for spec in settings.models for n in (spec.name, *spec.aliases)}
    added = [spec for spec in models_dir.read_new() if spec.name not in names]
    # Models load once, before the server reports SERVING, off the event loop.
    registry = await asyncio.to_thread(
        ModelRegistry.load,
        [*settings.models, *added],
        settings.default_model,
        settings.home,
        settings.slots,
        settings.queue_size,
        settings.stream_buffer_tokens,
    )
    # SERVING only once every model has run its kernels (see warmup.py).
    try:
        await warm_up(registry.engines, settings.warmup_timeout_seconds)
    except BaseException:
        await asyncio.to_thread(registry.close)
        raise

    watcher: asyncio.Task[None] | None = None

    async def register(server: grpc.aio.Server) -> list[str]:
        nonlocal watcher
        if settings.models_dir_poll_seconds > 0:
            watcher = asyncio.create_task(
                watch(
                    models_dir,
                    registry,
                    settings.models_dir_poll_seconds,
                    settings.warmup_timeout_seconds,
                )
            )
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(
            InferenceServicer(registry, settings.max_tokens_limit), server
        )
        return [inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name]

    async def close() -> None:
        if watcher is not None:
            watcher.cancel()
        await asyncio.to_thread(registry.close)

    return Service("inference", settings, register, close=close)


if __name__ == "__main__":
    run(make_service, "inference")
