"""`python -m headrace.services.auth`: run the auth service."""

from __future__ import annotations

import grpc

from headrace.auth.v1 import auth_pb2, auth_pb2_grpc
from headrace.services.auth.keys import KeyStore
from headrace.services.auth.servicer import AuthServicer
from headrace.services.auth.settings import AuthSettings
from headrace.services.auth.tokens import TokenVerifier
from headrace.services.runtime.server import Service, run


def make_service() -> Service:
    settings = AuthSettings()
    verifier = TokenVerifier(KeyStore(settings.home / "keys"), settings)

    async def register(server: grpc.aio.Server) -> list[str]:
        auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(verifier), server)
        return [auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name]

    return Service("auth", settings, register)


if __name__ == "__main__":
    run(make_service, "auth")
