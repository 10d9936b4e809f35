"""`python -m headrace.services.upstream`: serve hosted models as InferenceService."""

from __future__ import annotations

import asyncio
import contextlib

import grpc

from headrace.inference.v1 import inference_pb2, inference_pb2_grpc
from headrace.services.runtime.logs import get_logger
from headrace.services.runtime.redis_client import connect_redis
from headrace.services.runtime.server import Service, run
from headrace.services.upstream.allowance import (
    Allowances,
    AllowanceStore,
    MemoryAllowanceStore,
    RedisAllowanceStore,
)
from headrace.services.upstream.provider import OpenAIUpstream
from headrace.services.upstream.registry import HostedRegistry
from headrace.services.upstream.servicer import UpstreamServicer
from headrace.services.upstream.settings import UpstreamSettings

log = get_logger(__name__)

GAUGE_REFRESH_SECONDS = 15.0


async def make_service() -> Service:
    settings = UpstreamSettings()
    client, why = await connect_redis(settings.redis_url)
    store: AllowanceStore
    if client is None:
        log.warning("redis_unavailable_using_memory", reason=why, shared=False)
        store = MemoryAllowanceStore()
    else:
        store = RedisAllowanceStore(client)
    allowances = Allowances(
        store, {m.name: m.allowance for m in settings.hosted_models}, settings.allowance_prefix
    )
    upstreams = [OpenAIUpstream(spec) for spec in settings.hosted_models]
    for upstream in upstreams:
        # Present or absent only: a key is never logged.
        log.info(
            "hosted_model",
            name=upstream.spec.name,
            provider=upstream.spec.provider,
            api_key="present" if upstream.has_key else "absent",
        )
    registry = HostedRegistry(upstreams, allowances)

    async def refresh() -> None:
        while True:
            await registry.refresh_gauges()
            await asyncio.sleep(GAUGE_REFRESH_SECONDS)

    refresher = asyncio.create_task(refresh())

    async def register(server: grpc.aio.Server) -> list[str]:
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(
            UpstreamServicer(registry, settings.max_tokens_limit), server
        )
        return [inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name]

    async def close() -> None:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        await registry.close()
        if client is not None:
            await client.aclose()

    return Service("upstream", settings, register, close=close)


if __name__ == "__main__":
    run(make_service, "upstream")
