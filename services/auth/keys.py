"""Signing keys: ES256 (P-256) key pairs under `<home>/keys/`, owner-only.

Each key is a PEM file named by its kid (the RFC 7638 JWK thumbprint, so a
kid always names exactly one public key). `active` names the key new tokens
are signed with. The first process that needs a key creates one; creation is
race-free (write to a temp file, then a hard link that fails if it exists).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ALGORITHM = "ES256"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    """One key pair and its id."""

    kid: str
    private_key: ec.EllipticCurvePrivateKey

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    def jwk(self) -> dict[str, str]:
        """The public half as a JWK."""
        return {**_public_jwk(self.public_key), "kid": self.kid, "alg": ALGORITHM, "use": "sig"}


def _public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64(numbers.x.to_bytes(32, "big")),
        "y": _b64(numbers.y.to_bytes(32, "big")),
    }


def thumbprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 thumbprint: SHA-256 over the canonical JWK members."""
    jwk = _public_jwk(public_key)
    canonical = json.dumps(
        {k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True
    )
    return _b64(hashlib.sha256(canonical.encode()).digest())[:22]


class KeyStore:
    """The key directory. Reads happen at load(); nothing touches disk per request."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _write_atomically(self, path: Path, data: bytes, *, exclusive: bool) -> bool:
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
            os.close(fd)
            if exclusive:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, path)
                tmp = ""
            return True
        finally:
            if tmp:
                Path(tmp).unlink(missing_ok=True)

    def _ensure_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)

    def _write_new_key(self) -> SigningKey:
        self._ensure_directory()
        private_key = ec.generate_private_key(ec.SECP256R1())
        kid = thumbprint(private_key.public_key())
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._write_atomically(self.directory / f"{kid}.pem", pem, exclusive=True)
        return SigningKey(kid, private_key)

    def create_key(self, *, activate: bool) -> SigningKey:
        """Make a new key pair; with activate, new tokens are signed with it."""
        key = self._write_new_key()
        if activate:
            self._write_atomically(self.directory / "active", key.kid.encode(), exclusive=False)
        return key

    def ensure(self) -> None:
        """Create the first key if there is none yet (safe to race)."""
        if (self.directory / "active").exists():
            # Provisioned keys may be a read-only mount (a Kubernetes Secret) that this
            # process may not chmod: tighten the directory where allowed, else use it.
            with contextlib.suppress(OSError):
                os.chmod(self.directory, 0o700)
            return
        self._ensure_directory()
        if (self.directory / "active").exists():
            return
        key = self._write_new_key()
        # Only the first creator becomes active; a loser's key stays as a spare.
        self._write_atomically(self.directory / "active", key.kid.encode(), exclusive=True)

    def remove(self, kid: str) -> None:
        """Delete a retired key: tokens it signed stop verifying (the active key cannot go)."""
        active, keys = self.load()
        if kid == active:
            raise ValueError(f"{kid} is the active key; rotate first (`headrace keys rotate`)")
        if kid not in keys:
            raise KeyError(f"no key {kid!r} in {self.directory}")
        (self.directory / f"{kid}.pem").unlink()

    def load(self) -> tuple[str, dict[str, SigningKey]]:
        """The active kid and every key on disk."""
        self.ensure()
        keys: dict[str, SigningKey] = {}
        for path in sorted(self.directory.glob("*.pem")):
            private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(private_key, ec.EllipticCurvePrivateKey):
                continue
            keys[path.stem] = SigningKey(path.stem, private_key)
        active = (self.directory / "active").read_text().strip()
        if active not in keys:
            raise RuntimeError(f"active key {active!r} has no PEM file in {self.directory}")
        return active, keys
