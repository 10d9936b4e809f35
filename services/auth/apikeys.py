"""API keys: `hr_<id>_<secret>`, shown once, stored only as a SHA-256 hash.

The id (8 characters) makes a key recognisable in listings and logs without
revealing it; the secret has 192 bits of entropy, so a plain SHA-256 is a safe
hash (no password stretching needed) and lookups stay O(1). Keys live in
`<home>/apikeys.json` (owner-only); the auth service reloads the file when it
changes, so a revocation takes effect within `key_reload_seconds`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from headrace.services.runtime.errors import InvalidArgument, NotFound, Unauthenticated

PREFIX = "hr_"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class ApiKeyRecord:
    """What is stored for a key (never the secret)."""

    key_id: str
    secret_sha256: str
    subject: str
    scopes: list[str]
    tier: str
    name: str = ""
    created_at: int = field(default_factory=lambda: int(time.time()))
    revoked: bool = False


def looks_like_api_key(credential: str) -> bool:
    return credential.startswith(PREFIX) and credential.count("_") >= 2


class ApiKeyStore:
    """The API key file, read into memory; every change rewrites it atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records: dict[str, ApiKeyRecord] = {}
        self._mtime_ns = -1
        self.reload()

    def reload(self) -> bool:
        """Read the file if it changed; True when it did."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            changed = bool(self._records)
            self._records, self._mtime_ns = {}, -1
            return changed
        if mtime == self._mtime_ns:
            return False
        data = json.loads(self.path.read_text() or "[]")
        self._records = {r["key_id"]: ApiKeyRecord(**r) for r in data}
        self._mtime_ns = mtime
        return True

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".apikeys-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump([asdict(r) for r in self._records.values()], fh, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._mtime_ns = self.path.stat().st_mtime_ns

    def create(
        self, subject: str, scopes: list[str], tier: str, name: str = ""
    ) -> tuple[str, ApiKeyRecord]:
        """A new key: the full key (to show once) and its record."""
        if not subject or len(subject) > 256:
            raise InvalidArgument("subject must be 1 to 256 characters")
        self.reload()
        key_id = PREFIX + secrets.token_hex(4)
        secret = secrets.token_urlsafe(24)
        record = ApiKeyRecord(
            key_id=key_id,
            secret_sha256=_hash(secret),
            subject=subject,
            scopes=scopes or ["generate"],
            tier=tier or "free",
            name=name,
        )
        self._records[key_id] = record
        self._save()
        return f"{key_id}_{secret}", record

    def revoke(self, key_id: str) -> ApiKeyRecord:
        self.reload()
        record = self._records.get(key_id)
        if record is None:
            raise NotFound(f"no API key {key_id!r}; `headrace apikey list` shows them")
        record.revoked = True
        self._save()
        return record

    def list(self) -> list[ApiKeyRecord]:
        self.reload()
        return sorted(self._records.values(), key=lambda r: r.created_at)

    def verify(self, credential: str) -> ApiKeyRecord:
        """The record of a valid, unrevoked key, or Unauthenticated."""
        key_id, _, secret = credential[len(PREFIX) :].partition("_")
        record = self._records.get(PREFIX + key_id)
        if record is None or not hmac.compare_digest(record.secret_sha256, _hash(secret)):
            raise Unauthenticated("API key not recognised")
        if record.revoked:
            raise Unauthenticated("API key revoked")
        return record
