"""`python -m headrace.services.sanitizer`: run the sanitizer service."""

from __future__ import annotations

import grpc

from headrace.sanitizer.v1 import sanitizer_pb2, sanitizer_pb2_grpc
from headrace.services.runtime.server import Service, run
from headrace.services.sanitizer.policy import PromptPolicy
from headrace.services.sanitizer.servicer import SanitizerServicer
from headrace.services.sanitizer.settings import SanitizerSettings


def make_service() -> Service:
    settings = SanitizerSettings()
    policy = PromptPolicy(
        max_bytes=settings.max_prompt_bytes,
        max_tokens_estimate=settings.max_prompt_tokens_estimate,
        deny_terms=settings.deny_terms,
        redact=settings.redact,
    )

    async def register(server: grpc.aio.Server) -> list[str]:
        sanitizer_pb2_grpc.add_SanitizerServiceServicer_to_server(
            SanitizerServicer(policy, settings.deny_terms), server
        )
        return [sanitizer_pb2.DESCRIPTOR.services_by_name["SanitizerService"].full_name]

    return Service("sanitizer", settings, register)


if __name__ == "__main__":
    run(make_service, "sanitizer")
