"""Issuing and verifying JWTs.

Verification trusts nothing in the token header but the kid, and only to pick
one of our own keys: the algorithm is fixed (ES256), so `none` and HS/RS
confusion cannot apply; iss, aud, exp, nbf, iat and sub are required.

A token that verified is remembered (as Envoy's jwt_authn caches verified JWTs):
its next use checks only its validity period, not its ES256 signature again,
which is most of Authorize's own CPU time. Loading keys (a rotation, a removed
key) forgets every remembered token.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import jwt

from headrace.services.auth.keys import ALGORITHM, KeyStore, SigningKey
from headrace.services.auth.settings import TokenSettings
from headrace.services.runtime.credentials import ADMIN_SCOPE
from headrace.services.runtime.errors import InvalidArgument, Unauthenticated

REQUIRED_CLAIMS = ["exp", "iat", "nbf", "sub", "iss", "aud"]
# Reload the key directory at most this often when a token names an unknown kid
# (a key created by `headrace token issue` or a rotation after we started).
RELOAD_INTERVAL_S = 5.0
VERIFIED_TOKENS = 4096
"""Verified tokens remembered, most recently used kept."""


GENERATE_SCOPE = "generate"


@dataclass(frozen=True)
class Principal:
    """A verified caller."""

    subject: str
    scopes: tuple[str, ...] = ()
    tier: str = "free"

    def may_use(self, model: str) -> bool:
        """`generate` or `admin` allow every model; `model:NAME` allows one."""
        if ADMIN_SCOPE in self.scopes or GENERATE_SCOPE in self.scopes:
            return True
        return not model or f"model:{model}" in self.scopes

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes


def issue_token(
    store: KeyStore,
    settings: TokenSettings,
    subject: str,
    *,
    ttl_seconds: int | None = None,
    scopes: list[str] | None = None,
    tier: str = "free",
    now: float | None = None,
) -> str:
    """A signed token for `subject`, valid for ttl_seconds."""
    if not subject or len(subject) > 256:
        raise InvalidArgument("subject must be 1 to 256 characters")
    ttl = settings.default_ttl_seconds if ttl_seconds is None else ttl_seconds
    if not 0 < ttl <= settings.max_ttl_seconds:
        raise InvalidArgument(f"ttl must be between 1 and {settings.max_ttl_seconds} seconds")
    active, keys = store.load()
    key = keys[active]
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": subject,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl,
        "jti": uuid.uuid4().hex,
        "scope": " ".join(scopes or ["generate"]),
        "tier": tier,
    }
    return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})


@dataclass
class TokenVerifier:
    """Verifies tokens against the keys in a KeyStore, cached in memory."""

    store: KeyStore
    settings: TokenSettings
    _keys: dict[str, SigningKey] = field(default_factory=dict)
    _loaded_at: float = 0.0
    _signature: tuple[tuple[str, int], ...] = ()
    # token → (principal, valid from, valid until), both in Unix seconds. Keys are
    # reloaded on a worker thread (the service's key watcher), so the remembered
    # tokens and the key generation they were verified under change under a lock.
    _verified: OrderedDict[str, tuple[Principal, float, float]] = field(default_factory=OrderedDict)
    _generation: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.reload()

    def _dir_signature(self) -> tuple[tuple[str, int], ...]:
        return tuple(
            sorted((p.name, p.stat().st_mtime_ns) for p in self.store.directory.glob("*.pem"))
        )

    def reload(self) -> None:
        """Read the key directory again."""
        _, keys = self.store.load()
        with self._lock:
            self._keys = keys
            self._generation += 1
            self._verified.clear()
        self._signature = self._dir_signature()
        self._loaded_at = time.monotonic()

    def reload_if_changed(self) -> bool:
        """Reload when a key was added or removed (a rotation); True when it was."""
        if self._dir_signature() == self._signature:
            return False
        self.reload()
        return True

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """Public keys as a JWKS document."""
        return {"keys": [key.jwk() for key in self._keys.values()]}

    def _key_for(self, kid: str) -> SigningKey:
        key = self._keys.get(kid)
        if key is None and time.monotonic() - self._loaded_at > RELOAD_INTERVAL_S:
            self.reload()
            key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated("token was not signed by a key of this gateway")
        return key

    def verify(self, token: str) -> Principal:
        """The principal a token names, or Unauthenticated with a plain reason."""
        with self._lock:
            known = self._verified.get(token)
            generation = self._generation
            if known is not None:
                self._verified.move_to_end(token)
        if known is None:
            return self._verify_signed(token, generation)
        principal, valid_from, valid_until = known
        now, leeway = time.time(), self.settings.leeway_seconds
        if now > valid_until + leeway:
            with self._lock:
                self._verified.pop(token, None)
            raise Unauthenticated("token expired: issue a new one")
        if now < valid_from - leeway:
            raise Unauthenticated("token not valid yet (nbf/iat in the future)")
        return principal

    def _verify_signed(self, token: str, generation: int) -> Principal:
        if not token:
            raise Unauthenticated(
                "missing credential: send metadata 'authorization: Bearer <token>' "
                "(get one with `headrace token issue --subject NAME`)"
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:  # DecodeError, and bad kid/crit header parameters
            raise Unauthenticated("malformed token: not a JWT we accept") from None
        if header.get("alg") != ALGORITHM:
            raise Unauthenticated(f"token algorithm not accepted: only {ALGORITHM} is")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("token has no key id (kid)")
        key = self._key_for(kid)
        try:
            claims = jwt.decode(
                token,
                key=key.public_key,
                algorithms=[ALGORITHM],
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_seconds,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired: issue a new one") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("token not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("token audience is not this gateway") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("token issuer is not this gateway") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"token lacks the required '{exc.claim}' claim") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("token signature does not verify") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("malformed token") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("token subject (sub) is empty")
        scope = claims.get("scope", "")
        tier = claims.get("tier", "free")
        principal = Principal(
            subject=subject,
            scopes=tuple(scope.split()) if isinstance(scope, str) else (),
            tier=tier if isinstance(tier, str) else "free",
        )
        # PyJWT required exp, nbf and iat as numbers.
        valid_from = max(float(claims["nbf"]), float(claims["iat"]))
        with self._lock:
            # Keys reloaded while this token was checked: it may have been checked
            # against a key that is gone, so it is not remembered.
            if self._generation == generation:
                self._verified[token] = (principal, valid_from, float(claims["exp"]))
                while len(self._verified) > VERIFIED_TOKENS:
                    self._verified.popitem(last=False)
        return principal
