"""`python -m headrace.services.sanitizer`: run the sanitizer service."""

from __future__ import annotations

import grpc

from headrace.sanitizer.v1 import sanitizer_pb2, sanitizer_pb2_grpc
from headrace.services.runtime.server import Service, run
from headrace.services.sanitizer.servicer import SanitizerServicer
from headrace.services.sanitizer.settings import SanitizerSettings


def make_service() -> Service:
    settings = SanitizerSettings()
    # Compiled once at start-up (term automata, per tier): a bad rule stops the
    # service here, with the rule named, rather than on the first request.
    policies = settings.policies()

    async def register(server: grpc.aio.Server) -> list[str]:
        sanitizer_pb2_grpc.add_SanitizerServiceServicer_to_server(
            SanitizerServicer(policies), server
        )
        return [sanitizer_pb2.DESCRIPTOR.services_by_name["SanitizerService"].full_name]

    return Service("sanitizer", settings, register)


if __name__ == "__main__":
    run(make_service, "sanitizer")
