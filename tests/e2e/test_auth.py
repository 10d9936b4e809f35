"""Auth through Envoy: attacks on tokens, API keys, scopes, rate limits, token quotas
and key rotation, against the whole suite as real processes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.services.auth.keys import KeyStore
from headrace.types.v1 import types_pb2
from tests.support.suite import RunningSuite, running_suite

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
TIERS = {
    "free": {"requests_per_minute": 10_000},
    "limited": {"requests_per_minute": 20},
    "metered": {"tokens_per_day": 100},
    "unlimited": {},
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[RunningSuite]:
    with running_suite(
        tmp_path_factory.mktemp("auth-home"),
        tiny_model,
        extra_env={"HEADRACE_TIERS": json.dumps(TIERS), "HEADRACE_QUEUE_SIZE": "64"},
    ) as running:
        yield running


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def generate(
    stub: router_pb2_grpc.RouterServiceStub,
    credential: str | None,
    *,
    header: str = "authorization",
    max_tokens: int = 2,
    model: str = "",
) -> list[router_pb2.GenerateResponse]:
    metadata = []
    if credential is not None:
        metadata.append(
            (header, f"Bearer {credential}" if header == "authorization" else credential)
        )
    request = router_pb2.GenerateRequest(
        prompt="Hello world",
        model=model,
        bypass_cache=True,
        params=types_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0),
    )
    return list(stub.Generate(request, metadata=metadata, timeout=30))


def code_of(
    stub: router_pb2_grpc.RouterServiceStub, credential: str | None, **kw: object
) -> grpc.StatusCode:
    try:
        generate(stub, credential, **kw)  # type: ignore[arg-type]
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "iss": "headrace",
        "aud": "headrace",
        "sub": unique("attacker"),
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "scope": "generate",
    }
    base.update(overrides)
    return base


def sign_with_suite_key(suite: RunningSuite, payload: dict[str, object]) -> str:
    active, keys = KeyStore(suite.home / "keys").load()
    return jwt.encode(payload, keys[active].private_key, algorithm="ES256", headers={"kid": active})


def cli(suite: RunningSuite, *args: str) -> str:
    out = subprocess.run(
        [
            str(BIN / "headrace"),
            *args,
            *(["--target", suite.public] if args[0] in ("apikey", "usage") else []),
        ],
        env=suite.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_valid_token_is_accepted(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    assert code_of(stub, sign_with_suite_key(suite, claims())) == grpc.StatusCode.OK


def test_forged_and_invalid_tokens_are_all_unauthenticated(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    active, keys = KeyStore(suite.home / "keys").load()
    good = sign_with_suite_key(suite, claims())
    header, _payload, signature = good.split(".")
    tampered_payload = b64(json.dumps(claims(sub="admin", scope="admin")).encode())
    other_key = ec.generate_private_key(ec.SECP256R1())
    public_pem = keys[active].public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": active}).encode())
    hs_body = b64(json.dumps(claims()).encode())
    hs_signature = b64(
        hmac.new(public_pem, f"{hs_header}.{hs_body}".encode(), hashlib.sha256).digest()
    )
    none_header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": active}).encode())
    cases = {
        "no token": None,
        "garbage": "not-a-token",
        "alg none": f"{none_header}.{b64(json.dumps(claims()).encode())}.",
        "tampered payload": f"{header}.{tampered_payload}.{signature}",
        "another key, our kid": jwt.encode(
            claims(), other_key, algorithm="ES256", headers={"kid": active}
        ),
        "HS256 with our public key as secret": f"{hs_header}.{hs_body}.{hs_signature}",
        "expired": sign_with_suite_key(suite, claims(iat=1, nbf=1, exp=int(time.time()) - 120)),
        "not yet valid": sign_with_suite_key(suite, claims(nbf=int(time.time()) + 3600)),
        "wrong audience": sign_with_suite_key(suite, claims(aud="someone-else")),
        "wrong issuer": sign_with_suite_key(suite, claims(iss="evil")),
        "no subject": sign_with_suite_key(suite, {k: v for k, v in claims().items() if k != "sub"}),
    }
    results = {name: code_of(stub, token) for name, token in cases.items()}
    assert results == dict.fromkeys(cases, grpc.StatusCode.UNAUTHENTICATED)


def test_api_keys_work_as_bearer_or_x_api_key_until_revoked(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    subject = unique("service-account")
    key = (
        cli(suite, "apikey", "create", "--subject", subject, "--name", "ci")
        .strip()
        .splitlines()[-1]
    )
    assert key.startswith("hr_")
    assert code_of(stub, key) == grpc.StatusCode.OK
    assert code_of(stub, key, header="x-api-key") == grpc.StatusCode.OK
    key_id = "_".join(key.split("_")[:2])
    listing = cli(suite, "apikey", "list")
    assert key_id in listing and subject in listing
    assert key.split("_", 2)[2] not in listing, "the secret is never shown again"
    stored = (suite.home / "apikeys.json").read_text()
    assert key.split("_", 2)[2] not in stored, "only a hash is stored"
    cli(suite, "apikey", "revoke", key_id)
    assert code_of(stub, key) == grpc.StatusCode.UNAUTHENTICATED


def test_admin_calls_need_the_admin_scope(suite: RunningSuite) -> None:
    from headrace.auth.v1 import auth_pb2, auth_pb2_grpc

    token = sign_with_suite_key(suite, claims())
    with grpc.insecure_channel(suite.public) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ListApiKeys(
                auth_pb2.ListApiKeysRequest(), metadata=(("authorization", f"Bearer {token}"),)
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as info:
            stub.Authorize(auth_pb2.AuthorizeRequest(credential=token), timeout=5)
        assert info.value.code() in (
            grpc.StatusCode.UNIMPLEMENTED,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.UNAVAILABLE,
        ), "Authorize is internal: Envoy's public listener has no route for it"


def test_a_model_outside_the_token_scopes_is_permission_denied(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    only_other = sign_with_suite_key(suite, claims(scope="model:other-model"))
    assert code_of(stub, only_other, model="tiny") == grpc.StatusCode.PERMISSION_DENIED
    only_tiny = sign_with_suite_key(suite, claims(scope="model:tiny"))
    assert code_of(stub, only_tiny, model="tiny") == grpc.StatusCode.OK


def test_rate_limit_of_20_per_minute_lets_exactly_20_of_50_concurrent_requests_through(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    token = suite.token(unique("burst"), "--tier", "limited")
    results: list[tuple[grpc.StatusCode, tuple[tuple[str, str], ...]]] = []
    lock = threading.Lock()
    start = threading.Barrier(50)

    def one() -> None:
        start.wait()
        try:
            generate(stub, token, max_tokens=1)
            outcome = (grpc.StatusCode.OK, ())
        except grpc.RpcError as exc:
            outcome = (exc.code(), tuple(exc.trailing_metadata() or ()))
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    codes = [code for code, _ in results]
    assert codes.count(grpc.StatusCode.OK) == 20
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 30
    for code, trailers in results:
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            retry = dict(trailers).get("retry-after")
            assert retry is not None and 0 < float(retry) <= 60


def test_token_quota_refuses_the_request_that_would_exceed_it(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    subject = unique("metered")
    token = suite.token(subject, "--tier", "metered")  # 100 tokens a day
    first = generate(stub, token, max_tokens=40)
    used = first[-1].usage.total_tokens
    deadline = time.monotonic() + 5
    while f"tokens today:       {used} /" not in cli(suite, "usage", subject):
        assert time.monotonic() < deadline, "the reservation was not settled"
        time.sleep(0.1)
    with pytest.raises(grpc.RpcError) as info:
        generate(stub, token, max_tokens=100 - used)  # prompt + max_tokens would pass 100
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "token quota" in info.value.details()
    assert float(dict(info.value.trailing_metadata())["retry-after"]) > 0
    assert code_of(stub, token, max_tokens=20) == grpc.StatusCode.OK, (
        "a request that fits still goes"
    )


def test_a_rotated_out_key_verifies_until_removed(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    old_kid, _ = KeyStore(suite.home / "keys").load()
    old_token = suite.token(unique("before-rotation"))
    new_kid = cli(suite, "keys", "rotate").split()[-1]
    assert new_kid != old_kid
    new_token = suite.token(unique("after-rotation"))
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    time.sleep(1.5)  # the auth service checks the key directory every second
    assert code_of(stub, new_token) == grpc.StatusCode.OK
    assert code_of(stub, old_token) == grpc.StatusCode.OK
    cli(suite, "keys", "remove", old_kid)
    deadline = time.monotonic() + 5
    while code_of(stub, old_token) != grpc.StatusCode.UNAUTHENTICATED:
        assert time.monotonic() < deadline, "a removed key still verifies"
        time.sleep(0.2)
    assert code_of(stub, new_token) == grpc.StatusCode.OK


def test_a_refused_prompt_gives_its_quota_reservation_back(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    subject = unique("refused")
    token = suite.token(subject, "--tier", "metered")  # 100 tokens a day
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as info:
            list(
                stub.Generate(
                    router_pb2.GenerateRequest(
                        prompt="   ", params=types_pb2.SamplingParams(max_tokens=60)
                    ),
                    metadata=(("authorization", f"Bearer {token}"),),
                    timeout=10,
                )
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    deadline = time.monotonic() + 5
    while "tokens today:       0 /" not in cli(suite, "usage", subject):
        assert time.monotonic() < deadline, "a refused request kept its reservation"
        time.sleep(0.1)
    assert code_of(stub, token, max_tokens=40) == grpc.StatusCode.OK


def test_the_quota_reservation_uses_the_preset_max_tokens(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    # 100 tokens a day: the dialogue preset's 50 tokens fit, the router's default 256 would not.
    token = suite.token(unique("preset"), "--tier", "metered")
    request = router_pb2.GenerateRequest(prompt="Hi", task="dialogue", bypass_cache=True)
    messages = list(
        stub.Generate(request, metadata=(("authorization", f"Bearer {token}"),), timeout=30)
    )
    assert messages[-1].usage.completion_tokens <= 50


def test_an_api_key_caller_gets_one_prompt_check_under_the_tier_auth_gives(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    """The tier picks the sanitizer's policy, and only auth answers it: the router
    checks the prompt once Authorize has answered, so every request, the first one
    with an API key included, costs exactly one check under the right policy."""
    key = (
        cli(suite, "apikey", "create", "--subject", unique("svc"), "--tier", "unlimited")
        .strip()
        .splitlines()[-1]
    )

    def checks() -> float:
        return suite.rpcs_started(
            "sanitizer", "headrace.sanitizer.v1.SanitizerService", "CheckPrompt"
        )

    before = checks()
    for _ in range(4):
        assert code_of(stub, key) == grpc.StatusCode.OK
    assert checks() - before == 4, "one check per request, the first one included"
