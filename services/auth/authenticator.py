"""Who a credential names: a JWT of ours, or an API key."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter

from headrace.services.auth.apikeys import ApiKeyStore, looks_like_api_key
from headrace.services.auth.tokens import Principal, TokenVerifier
from headrace.services.runtime.errors import PermissionDenied, Unauthenticated

AUTHENTICATIONS = Counter(
    "headrace_auth_authentications_total",
    "Credential checks by kind (jwt, api_key) and result (ok, or the failure).",
    ["kind", "result"],
)


@dataclass
class Authenticator:
    """Verifies JWTs and API keys; keys and API keys are cached in memory."""

    tokens: TokenVerifier
    api_keys: ApiKeyStore

    def authenticate(self, credential: str) -> Principal:
        kind = "api_key" if looks_like_api_key(credential) else "jwt"
        try:
            if kind == "api_key":
                record = self.api_keys.verify(credential)
                principal = Principal(record.subject, tuple(record.scopes), record.tier)
            else:
                principal = self.tokens.verify(credential)
        except Unauthenticated as exc:
            AUTHENTICATIONS.labels(kind, exc.message.split(":")[0][:40]).inc()
            raise
        AUTHENTICATIONS.labels(kind, "ok").inc()
        return principal

    def authorize_model(self, principal: Principal, model: str) -> None:
        if not principal.may_use(model):
            raise PermissionDenied(
                f"subject {principal.subject!r} may not use model {model!r}; "
                f"its scopes are: {' '.join(principal.scopes) or '(none)'}"
            )

    def require_admin(self, credential: str) -> Principal:
        principal = self.authenticate(credential)
        if not principal.is_admin:
            raise PermissionDenied("this call needs the 'admin' scope")
        return principal

    def reload_if_changed(self) -> None:
        """Pick up rotated signing keys and API key changes (called periodically)."""
        self.tokens.reload_if_changed()
        self.api_keys.reload()
