"""`python -m headrace.services.sanitizer`: run the sanitizer service."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from headrace.inference.v1 import inference_pb2_grpc
from headrace.sanitizer.v1 import sanitizer_pb2, sanitizer_pb2_grpc
from headrace.services.runtime.channels import internal_channel
from headrace.services.runtime.server import Service, run
from headrace.services.sanitizer.guard_client import GuardClient
from headrace.services.sanitizer.live import LivePolicies
from headrace.services.sanitizer.policy import TierPolicies
from headrace.services.sanitizer.servicer import SanitizerServicer
from headrace.services.sanitizer.settings import SanitizerSettings


def make_service() -> Service:
    settings = SanitizerSettings()
    files: list[Path] = settings.policy_files()

    def load() -> TierPolicies:
        nonlocal files
        reloaded = SanitizerSettings()
        policies = reloaded.policies()
        files = reloaded.policy_files()
        return policies

    # Compiled once at start-up (term automata, per tier): a bad rule stops the
    # service here, with the rule named, rather than on the first request.
    live = LivePolicies(settings.policies(), load, lambda: files)
    # A tier's guard model is asked through Envoy's internal listener, like any
    # internal call; the channel connects on first use, so without a guard (the
    # default) it costs nothing, and a reload that adds one needs no restart.
    guard = GuardClient(
        inference_pb2_grpc.InferenceServiceStub(
            internal_channel(
                settings.internal_target, settings.cert_paths if settings.tls else None
            )
        )
    )
    background: list[asyncio.Task[None]] = []

    async def register(server: grpc.aio.Server) -> list[str]:
        sanitizer_pb2_grpc.add_SanitizerServiceServicer_to_server(
            SanitizerServicer(live, settings.output_policy_heartbeat_seconds, guard), server
        )
        if settings.policy_reload_seconds > 0:
            background.append(asyncio.create_task(live.follow(settings.policy_reload_seconds)))
        return [sanitizer_pb2.DESCRIPTOR.services_by_name["SanitizerService"].full_name]

    async def close() -> None:
        for task in background:
            await task

    return Service("sanitizer", settings, register, close=close, stopping=live.close)


if __name__ == "__main__":
    run(make_service, "sanitizer")
