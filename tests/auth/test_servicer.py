"""AuthService RPCs that read the caller's credential do so once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from headrace.auth.v1 import auth_pb2
from headrace.services.auth.servicer import AuthServicer
from headrace.services.auth.settings import TierLimits
from headrace.services.auth.tokens import Principal
from headrace.services.runtime.errors import PermissionDenied


class Context:
    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", "Bearer the-credential"),)


class CountingAuthenticator:
    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.verified = 0

    def authenticate(self, credential: str) -> Principal:
        self.verified += 1
        return self.principal

    def require_admin(self, credential: str) -> Principal:
        principal = self.authenticate(credential)
        if not principal.is_admin:
            raise PermissionDenied("this call needs the 'admin' scope")
        return principal


async def used(subject: str) -> tuple[int, int, str]:
    return 5, 7, "free"


LIMITS: Any = SimpleNamespace(used=used, tier=lambda name: TierLimits())


@pytest.mark.parametrize("scopes", [("admin",), ("generate",)])
async def test_get_usage_verifies_the_credential_once(scopes: tuple[str, ...]) -> None:
    authenticator = CountingAuthenticator(Principal("alice", scopes, "free"))
    servicer = AuthServicer(authenticator, LIMITS)  # type: ignore[arg-type]
    other = auth_pb2.GetUsageRequest(subject="bob")
    if "admin" in scopes:
        reply = await servicer.GetUsage(other, Context())  # type: ignore[arg-type]
        assert reply.subject == "bob" and reply.tokens_today == 5
    else:
        with pytest.raises(PermissionDenied, match="'admin' scope"):
            await servicer.GetUsage(other, Context())  # type: ignore[arg-type]
    assert authenticator.verified == 1
    own = await servicer.GetUsage(auth_pb2.GetUsageRequest(), Context())  # type: ignore[arg-type]
    assert own.subject == "alice" and authenticator.verified == 2
