"""Signing keys on disk (keys.py) and issuing/verifying ES256 JWTs (tokens.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from headrace.services.auth import tokens
from headrace.services.auth.keys import KeyStore, thumbprint
from headrace.services.auth.settings import TokenSettings
from headrace.services.auth.tokens import Principal, TokenVerifier, issue_token
from headrace.services.runtime.errors import Unauthenticated

LEEWAY_S = 5.0


# --- helpers -----------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json_b64(obj: dict[str, Any]) -> str:
    return _b64url(json.dumps(obj, separators=(",", ":")).encode())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "headrace",
        "aud": "headrace",
        "sub": "alice",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "scope": "generate",
        "tier": "free",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture
def settings(tmp_path: Path) -> TokenSettings:
    return TokenSettings(
        home=tmp_path,
        issuer="headrace",
        audience="headrace",
        leeway_seconds=LEEWAY_S,
        default_ttl_seconds=3600,
        max_ttl_seconds=86400,
    )


@pytest.fixture
def store(settings: TokenSettings) -> KeyStore:
    return KeyStore(settings.home / "keys")


@pytest.fixture
def verifier(store: KeyStore, settings: TokenSettings) -> TokenVerifier:
    return TokenVerifier(store, settings)


def _active_key(store: KeyStore):
    active, keys = store.load()
    return keys[active]


def _sign_with_active_key(store: KeyStore, claims: dict[str, Any]) -> str:
    key = _active_key(store)
    return jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": key.kid})


def _assert_rejected(verifier: TokenVerifier, token: str, reason: str) -> Unauthenticated:
    """verify() raises Unauthenticated with `reason` in a short message that leaks nothing."""
    with pytest.raises(Unauthenticated) as info:
        verifier.verify(token)
    message = info.value.message
    assert message == str(info.value)
    assert reason in message
    assert "Traceback" not in message
    assert 'File "' not in message
    assert "\n" not in message
    if token:
        assert token not in message
        for segment in token.split("."):
            if len(segment) >= 8:
                assert segment not in message
    return info.value


# --- keys.py: files and permissions --------------------------------------------


def test_ensure_creates_key_directory_0700_and_pem_files_0600(tmp_path: Path) -> None:
    directory = tmp_path / "home" / "keys"
    old_umask = os.umask(0)  # the permissions must not depend on a strict umask
    try:
        store = KeyStore(directory)
        store.ensure()
        store.create_key(activate=False)
    finally:
        os.umask(old_umask)

    assert _mode(directory) == 0o700
    pems = list(directory.glob("*.pem"))
    assert len(pems) == 2
    for pem in pems:
        assert _mode(pem) == 0o600
    assert _mode(directory / "active") == 0o600


def test_ensure_tightens_an_existing_world_readable_key_directory(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)

    KeyStore(directory).ensure()

    assert _mode(directory) == 0o700


def test_pem_file_is_named_by_the_thumbprint_of_its_public_key(store: KeyStore) -> None:
    active, keys = store.load()

    key = keys[active]
    assert key.kid == thumbprint(key.public_key)
    assert (store.directory / f"{active}.pem").is_file()


def test_ensure_is_idempotent(store: KeyStore) -> None:
    store.ensure()
    active_before = (store.directory / "active").read_text()
    pems_before = {p.name: p.read_bytes() for p in store.directory.glob("*.pem")}

    store.ensure()
    store.ensure()

    assert (store.directory / "active").read_text() == active_before
    assert {p.name: p.read_bytes() for p in store.directory.glob("*.pem")} == pems_before
    assert len(pems_before) == 1


def test_stores_racing_to_ensure_one_directory_agree_on_one_active_key(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    racers = 8
    barrier = threading.Barrier(racers)
    errors: list[BaseException] = []

    def race() -> None:
        try:
            barrier.wait()
            KeyStore(directory).ensure()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert errors == []
    actives = {KeyStore(directory).load()[0] for _ in range(racers)}
    assert len(actives) == 1
    (active,) = actives
    assert (directory / f"{active}.pem").is_file()
    assert not list(directory.glob(".tmp-*")), "temporary files left behind"


def test_create_key_with_activate_switches_the_active_key(store: KeyStore) -> None:
    first, _ = store.load()

    new = store.create_key(activate=True)

    active, keys = store.load()
    assert active == new.kid != first
    assert set(keys) == {first, new.kid}


# --- tokens.py: round trip ---------------------------------------------------------


def test_issued_token_verifies_to_its_subject_scopes_and_tier(
    store: KeyStore, settings: TokenSettings, verifier: TokenVerifier
) -> None:
    token = issue_token(store, settings, "alice", scopes=["generate", "model:tiny"], tier="pro")

    principal = verifier.verify(token)

    assert principal == Principal(subject="alice", scopes=("generate", "model:tiny"), tier="pro")


def test_issued_token_defaults_to_generate_scope_and_free_tier(
    store: KeyStore, settings: TokenSettings, verifier: TokenVerifier
) -> None:
    principal = verifier.verify(issue_token(store, settings, "bob"))

    assert principal.scopes == ("generate",)
    assert principal.tier == "free"


def test_issued_token_header_names_es256_and_the_active_kid(
    store: KeyStore, settings: TokenSettings
) -> None:
    token = issue_token(store, settings, "alice")

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["kid"] == store.load()[0]


# --- tokens.py: rejections ---------------------------------------------------------


def test_empty_credential_is_rejected_as_missing(verifier: TokenVerifier) -> None:
    _assert_rejected(verifier, "", "missing credential")


@pytest.mark.parametrize(
    "garbage",
    ["garbage", "not.a.jwt", "a.b", "....", "eyJ!!!.eyJ!!!.sig", "Bearer xyz", "é.é.é"],
)
def test_garbage_string_is_rejected_as_malformed(verifier: TokenVerifier, garbage: str) -> None:
    _assert_rejected(verifier, garbage, "malformed token")


def test_alg_none_token_is_rejected(store: KeyStore, verifier: TokenVerifier) -> None:
    kid = store.load()[0]
    token = f"{_json_b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_json_b64(_claims())}."

    _assert_rejected(verifier, token, "algorithm not accepted")


def test_tampered_payload_with_original_signature_is_rejected(
    store: KeyStore, settings: TokenSettings, verifier: TokenVerifier
) -> None:
    token = issue_token(store, settings, "alice")
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "mallory"
    tampered = f"{header}.{_json_b64(claims)}.{signature}"

    _assert_rejected(verifier, tampered, "signature does not verify")


def test_token_signed_by_a_foreign_ec_key_with_our_kid_is_rejected(
    store: KeyStore, verifier: TokenVerifier
) -> None:
    kid = store.load()[0]
    foreign = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(_claims(), foreign, algorithm="ES256", headers={"kid": kid})

    _assert_rejected(verifier, token, "signature does not verify")


@pytest.mark.parametrize("alg", ["HS256", "ES256"])
def test_hmac_token_keyed_with_our_public_key_pem_is_rejected(
    store: KeyStore, verifier: TokenVerifier, alg: str
) -> None:
    """The classic algorithm-confusion attack: HMAC with the public key as secret."""
    key = _active_key(store)
    secret = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = (
        f"{_json_b64({'alg': alg, 'typ': 'JWT', 'kid': key.kid})}.{_json_b64(_claims())}"
    )
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{_b64url(mac)}"

    reason = "algorithm not accepted" if alg == "HS256" else "signature does not verify"
    _assert_rejected(verifier, token, reason)


def test_expired_token_is_rejected(
    store: KeyStore, settings: TokenSettings, verifier: TokenVerifier
) -> None:
    issued = time.time() - 60 - LEEWAY_S - 30  # expired 30 s beyond the leeway
    token = issue_token(store, settings, "alice", ttl_seconds=60, now=issued)

    _assert_rejected(verifier, token, "expired")


def test_token_expired_within_leeway_is_still_accepted(
    store: KeyStore, settings: TokenSettings, verifier: TokenVerifier
) -> None:
    issued = time.time() - 60 - LEEWAY_S / 2
    token = issue_token(store, settings, "alice", ttl_seconds=60, now=issued)

    assert verifier.verify(token).subject == "alice"


def test_not_yet_valid_token_is_rejected(store: KeyStore, verifier: TokenVerifier) -> None:
    now = int(time.time())
    token = _sign_with_active_key(store, _claims(nbf=now + 3600, exp=now + 7200))

    _assert_rejected(verifier, token, "not valid yet")


def test_wrong_audience_is_rejected(store: KeyStore, verifier: TokenVerifier) -> None:
    token = _sign_with_active_key(store, _claims(aud="some-other-service"))

    _assert_rejected(verifier, token, "audience")


def test_wrong_issuer_is_rejected(store: KeyStore, verifier: TokenVerifier) -> None:
    token = _sign_with_active_key(store, _claims(iss="https://evil.example"))

    _assert_rejected(verifier, token, "issuer")


def test_token_without_sub_is_rejected(store: KeyStore, verifier: TokenVerifier) -> None:
    claims = _claims()
    del claims["sub"]
    token = _sign_with_active_key(store, claims)

    _assert_rejected(verifier, token, "'sub'")


def test_token_with_empty_sub_is_rejected(store: KeyStore, verifier: TokenVerifier) -> None:
    token = _sign_with_active_key(store, _claims(sub=""))

    _assert_rejected(verifier, token, "sub")


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "iss", "aud"])
def test_token_without_a_required_time_or_audience_claim_is_rejected(
    store: KeyStore, verifier: TokenVerifier, claim: str
) -> None:
    claims = _claims()
    del claims[claim]
    token = _sign_with_active_key(store, claims)

    _assert_rejected(verifier, token, f"'{claim}'")


def test_token_without_kid_is_rejected(store: KeyStore, verifier: TokenVerifier) -> None:
    token = jwt.encode(_claims(), _active_key(store).private_key, algorithm="ES256")

    _assert_rejected(verifier, token, "no key id")


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "ES256", "kid": 123},
        {"alg": "ES256", "kid": "k", "crit": ["x-unknown"]},
    ],
    ids=["int-kid", "unsupported-crit"],
)
def test_token_with_an_invalid_header_parameter_is_rejected_as_unauthenticated(
    verifier: TokenVerifier, header: dict[str, Any]
) -> None:
    token = f"{_json_b64(header)}.{_json_b64(_claims())}.{_b64url(b'x' * 64)}"

    _assert_rejected(verifier, token, "malformed token")


# --- tokens.py: key reload and JWKS ------------------------------------------------


def test_verifier_picks_up_a_key_created_after_it_loaded(
    store: KeyStore,
    settings: TokenSettings,
    verifier: TokenVerifier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tokens, "RELOAD_INTERVAL_S", 0.0)
    other_process_store = KeyStore(store.directory)
    new = other_process_store.create_key(activate=True)
    token = issue_token(other_process_store, settings, "carol")
    assert jwt.get_unverified_header(token)["kid"] == new.kid

    assert verifier.verify(token).subject == "carol"


def test_verifier_rejects_an_unknown_kid_until_the_reload_interval_passed(
    store: KeyStore,
    settings: TokenSettings,
    verifier: TokenVerifier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tokens, "RELOAD_INTERVAL_S", 3600.0)
    other_process_store = KeyStore(store.directory)
    other_process_store.create_key(activate=True)
    token = issue_token(other_process_store, settings, "carol")

    _assert_rejected(verifier, token, "not signed by a key of this gateway")


def test_verifier_rejects_a_kid_that_is_not_on_disk(
    verifier: TokenVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens, "RELOAD_INTERVAL_S", 0.0)
    stranger = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(_claims(), stranger, algorithm="ES256", headers={"kid": "no-such-kid"})

    _assert_rejected(verifier, token, "not signed by a key of this gateway")


def test_jwks_exposes_only_public_members_of_every_key(
    store: KeyStore, settings: TokenSettings
) -> None:
    store.ensure()
    spare = store.create_key(activate=False)
    verifier = TokenVerifier(store, settings)

    jwks = verifier.jwks()

    kids = {key["kid"] for key in jwks["keys"]}
    assert spare.kid in kids and store.load()[0] in kids
    for key in jwks["keys"]:
        assert "d" not in key
        assert set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
        assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")
    assert "PRIVATE" not in json.dumps(jwks)


def test_jwks_key_verifies_an_issued_token(
    store: KeyStore, settings: TokenSettings, verifier: TokenVerifier
) -> None:
    token = issue_token(store, settings, "alice")
    (jwk,) = verifier.jwks()["keys"]

    public_key = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(jwk))
    claims = jwt.decode(token, public_key, algorithms=["ES256"], audience="headrace")
    assert claims["sub"] == "alice"


def test_keys_on_a_read_only_mount_are_used_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Kubernetes Secret mounts the keys read-only, in a directory the service may not
    chmod: provisioned keys are used as they are."""
    directory = tmp_path / "keys"
    KeyStore(directory).ensure()
    active = (directory / "active").read_text()

    def refuse(path: object, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(os, "chmod", refuse)
    loaded, keys = KeyStore(directory).load()

    assert loaded == active and set(keys) == {active}


# --- verified tokens remembered ----------------------------------------------


def test_a_verified_token_is_not_signature_checked_again(
    store: KeyStore,
    settings: TokenSettings,
    verifier: TokenVerifier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = issue_token(store, settings, "alice", scopes=["generate"], tier="pro")
    first = verifier.verify(token)

    def no_second_check(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("signature verified again")

    monkeypatch.setattr(tokens.jwt, "decode", no_second_check)
    assert verifier.verify(token) == first == Principal("alice", ("generate",), "pro")


def test_a_remembered_token_still_expires(
    store: KeyStore,
    settings: TokenSettings,
    verifier: TokenVerifier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = issue_token(store, settings, "alice", ttl_seconds=60)
    assert verifier.verify(token).subject == "alice"
    now = time.time()
    monkeypatch.setattr(tokens.time, "time", lambda: now + 60 + LEEWAY_S / 2)
    assert verifier.verify(token).subject == "alice"  # within the leeway
    monkeypatch.setattr(tokens.time, "time", lambda: now + 60 + LEEWAY_S + 5)

    _assert_rejected(verifier, token, "expired")


def test_a_tampered_copy_of_a_remembered_token_is_still_rejected(
    store: KeyStore, settings: TokenSettings, verifier: TokenVerifier
) -> None:
    token = issue_token(store, settings, "alice")
    verifier.verify(token)
    header, _, signature = token.split(".")
    forged = ".".join([header, _json_b64(_claims(sub="mallory")), signature])

    _assert_rejected(verifier, forged, "signature")


def test_removing_a_key_forgets_the_tokens_it_signed(
    store: KeyStore, settings: TokenSettings, verifier: TokenVerifier
) -> None:
    old = _active_key(store)
    token = issue_token(store, settings, "alice")
    assert verifier.verify(token).subject == "alice"
    store.create_key(activate=True)
    (store.directory / f"{old.kid}.pem").unlink()
    assert verifier.reload_if_changed()

    _assert_rejected(verifier, token, "not signed by a key of this gateway")


def test_remembered_tokens_are_bounded(
    store: KeyStore,
    settings: TokenSettings,
    verifier: TokenVerifier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tokens, "VERIFIED_TOKENS", 3)
    issued = [issue_token(store, settings, f"user{i}") for i in range(5)]
    for token in issued:
        verifier.verify(token)
    assert list(verifier._verified) == issued[2:]


def test_a_token_checked_while_keys_reload_is_not_remembered(
    store: KeyStore,
    settings: TokenSettings,
    verifier: TokenVerifier,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The key watcher reloads on another thread: a token whose signature was being
    # checked against a key that the reload removed must not be remembered as good.
    old = _active_key(store)
    token = issue_token(store, settings, "alice")
    store.create_key(activate=True)
    decode = tokens.jwt.decode

    def decode_while_the_key_is_removed(*args: Any, **kwargs: Any) -> Any:
        claims = decode(*args, **kwargs)
        (store.directory / f"{old.kid}.pem").unlink()
        thread = threading.Thread(target=verifier.reload_if_changed)
        thread.start()
        thread.join()
        return claims

    monkeypatch.setattr(tokens.jwt, "decode", decode_while_the_key_is_removed)
    assert verifier.verify(token).subject == "alice"  # it was good when it was checked
    monkeypatch.setattr(tokens.jwt, "decode", decode)

    _assert_rejected(verifier, token, "not signed by a key of this gateway")
