"""AuthService RPCs that read the caller's credential do so once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from headrace.auth.v1 import auth_pb2
from headrace.services.auth.limits import Limits, MemoryLimitStore
from headrace.services.auth.servicer import AuthServicer
from headrace.services.auth.settings import TierLimits
from headrace.services.auth.tokens import Principal
from headrace.services.runtime.errors import PermissionDenied, ResourceExhausted, Unauthenticated


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


# ---- settlements carried by Authorize -----------------------------------------------


class Refusing(CountingAuthenticator):
    def authenticate(self, credential: str) -> Principal:
        if credential == "bad":
            raise Unauthenticated("invalid token")
        return super().authenticate(credential)

    def authorize_model(self, principal: Principal, model: str) -> None:
        return None


def settlement(reserved: int, used: int) -> auth_pb2.RecordUsageRequest:
    return auth_pb2.RecordUsageRequest(
        subject="alice", tier="free", reserved_tokens=reserved, used_tokens=used
    )


async def test_authorize_applies_the_settlements_it_carries_before_admitting() -> None:
    limits = Limits({"free": TierLimits(tokens_per_day=100)}, MemoryLimitStore())
    servicer = AuthServicer(Refusing(Principal("alice", ("generate",), "free")), limits)

    def authorize(*settled: auth_pb2.RecordUsageRequest) -> Any:
        request = auth_pb2.AuthorizeRequest(
            credential="good", reserve_tokens=80, settlements=list(settled)
        )
        return servicer.Authorize(request, Context())  # type: ignore[arg-type]

    assert (await authorize()).reserved_tokens == 80
    with pytest.raises(ResourceExhausted):
        await authorize()  # the first request's 80 are still reserved
    # That request used 10: the settlement the next Authorize carries frees 70 first.
    assert (await authorize(settlement(80, 10))).reserved_tokens == 80
    assert (await limits.used("alice"))[0] == 90
    # Applied whatever the verdict: a refused credential's Authorize still settles.
    bad = auth_pb2.AuthorizeRequest(credential="bad", settlements=[settlement(80, 0)])
    with pytest.raises(Unauthenticated):
        await servicer.Authorize(bad, Context())  # type: ignore[arg-type]
    assert (await limits.used("alice"))[0] == 10
