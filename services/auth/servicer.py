"""AuthService RPCs ↔ the authenticator, the API key store and the limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import grpc

from headrace.auth.v1 import auth_pb2, auth_pb2_grpc
from headrace.services.auth.apikeys import ApiKeyRecord
from headrace.services.auth.authenticator import Authenticator
from headrace.services.auth.limits import Limits, reservation
from headrace.services.runtime.credentials import credential_from
from headrace.services.runtime.errors import PermissionDenied


def _key_proto(record: ApiKeyRecord) -> auth_pb2.ApiKey:
    return auth_pb2.ApiKey(
        key_id=record.key_id,
        subject=record.subject,
        scopes=record.scopes,
        tier=record.tier,
        name=record.name,
        created_at=record.created_at,
        revoked=record.revoked,
    )


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """Credentials, keys and limits."""

    def __init__(self, authenticator: Authenticator, limits: Limits) -> None:
        self._auth = authenticator
        self._limits = limits

    async def Authorize(
        self, request: auth_pb2.AuthorizeRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.AuthorizeResponse:
        if request.settlements:
            # Shielded: a caller that goes away does not stop them half-way (and ids
            # make a resent one harmless).
            await asyncio.shield(self._settle(request.settlements))
        principal = self._auth.authenticate(request.credential)
        self._auth.authorize_model(principal, request.model)
        reserved = await self._limits.admit(
            principal.subject,
            principal.tier,
            reservation(request.content_bytes, request.reserve_tokens),
        )
        return auth_pb2.AuthorizeResponse(
            subject=principal.subject,
            scopes=list(principal.scopes),
            tier=principal.tier,
            reserved_tokens=reserved,
        )

    async def RecordUsage(
        self, request: auth_pb2.RecordUsageRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RecordUsageResponse:
        await self._settle([request])
        return auth_pb2.RecordUsageResponse()

    async def _settle(self, settlements: Sequence[auth_pb2.RecordUsageRequest]) -> None:
        """Replace reservations by the tokens really used."""
        await asyncio.gather(
            *(
                self._limits.settle(s.subject, s.reserved_tokens, s.used_tokens, s.settlement_id)
                for s in settlements
            )
        )

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetJwksResponse:
        return auth_pb2.GetJwksResponse(jwks_json=json.dumps(self._auth.tokens.jwks()))

    async def GetUsage(
        self, request: auth_pb2.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetUsageResponse:
        caller = self._auth.authenticate(credential_from(context))
        subject = request.subject or caller.subject
        if subject != caller.subject and not caller.is_admin:
            raise PermissionDenied("this call needs the 'admin' scope")
        day, month, tier = await self._limits.used(subject)
        tier = tier or (caller.tier if subject == caller.subject else "free")
        limits = self._limits.tier(tier)
        return auth_pb2.GetUsageResponse(
            subject=subject,
            tier=tier,
            requests_per_minute=limits.requests_per_minute,
            tokens_today=day,
            tokens_per_day=limits.tokens_per_day,
            tokens_this_month=month,
            tokens_per_month=limits.tokens_per_month,
        )

    async def CreateApiKey(
        self, request: auth_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.CreateApiKeyResponse:
        self._auth.require_admin(credential_from(context))
        key, record = self._auth.api_keys.create(
            request.subject, list(request.scopes), request.tier, request.name
        )
        return auth_pb2.CreateApiKeyResponse(api_key=key, key=_key_proto(record))

    async def ListApiKeys(
        self, request: auth_pb2.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListApiKeysResponse:
        self._auth.require_admin(credential_from(context))
        return auth_pb2.ListApiKeysResponse(
            keys=[_key_proto(r) for r in self._auth.api_keys.list()]
        )

    async def RevokeApiKey(
        self, request: auth_pb2.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RevokeApiKeyResponse:
        self._auth.require_admin(credential_from(context))
        self._auth.api_keys.revoke(request.key_id)
        return auth_pb2.RevokeApiKeyResponse()
