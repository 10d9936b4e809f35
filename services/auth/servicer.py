"""AuthService RPCs ↔ the token domain. Nothing else lives here."""

from __future__ import annotations

import json

import grpc

from headrace.auth.v1 import auth_pb2, auth_pb2_grpc
from headrace.services.auth.tokens import TokenVerifier


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """Verifies credentials and publishes the public keys."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def Authorize(
        self, request: auth_pb2.AuthorizeRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.AuthorizeResponse:
        principal = self._verifier.verify(request.credential)
        return auth_pb2.AuthorizeResponse(
            subject=principal.subject, scopes=list(principal.scopes), tier=principal.tier
        )

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetJwksResponse:
        return auth_pb2.GetJwksResponse(jwks_json=json.dumps(self._verifier.jwks()))
