"""Hosted upstreams through Envoy, with real HTTP servers as the "hosted" providers
(the tests' own SSE server): free allowances spent first and never past them (across
two upstream replicas sharing Redis), 429 cool-downs, failures before and after the
first token, local inference killed, privacy opt-in, redaction, and keys kept out of
everything the suite writes or says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import redis

from headrace.inference.v1 import inference_pb2, inference_pb2_grpc
from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.services.runtime.openai_wire import parse_sse
from headrace.types.v1 import types_pb2
from tests.support.ports import free_port_block
from tests.support.suite import REPO, RunningSuite, running_suite, serving
from tests.upstream.fake_provider import FakeProvider

pytestmark = pytest.mark.e2e

KEY = "sk-e2e-9d8c7b6a5f4e3d2c1b0a99887766554433"
AWS = "AKIAIOSFODNN7EXAMPLE"
REDIS_URL = os.environ.get("HEADRACE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
PREFIX = f"headrace:test:{uuid.uuid4().hex[:10]}"


def redis_or_skip() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
    try:
        client.ping()
    except (redis.RedisError, OSError):
        pytest.skip("no Redis on 127.0.0.1:6379: allowances would not be shared")
    return client


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeProvider]]:
    # Each scenario has its own provider, so their counts are their own.
    started = {name: FakeProvider(chunk_delay_s=0.02).start() for name in "abcde"}
    yield started
    for fake in started.values():
        fake.stop()


def hosted(name: str, fake: FakeProvider, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "base_url": fake.base_url,
        "model": f"provider-{name}",
        "provider": f"provider-{name[-1]}",
        "api_key_env": "E2E_PROVIDER_KEY",
        "first_token_timeout_seconds": 3,
        "read_timeout_seconds": 3,
        **extra,
    }


def hosted_models(fakes: dict[str, FakeProvider]) -> str:
    return json.dumps(
        [
            hosted("hosted-a", fakes["a"], allowance={"requests_per_day": 5}),
            hosted("hosted-b", fakes["b"]),
            hosted("hosted-c", fakes["c"]),
            hosted("hosted-d", fakes["d"]),
            hosted("hosted-e", fakes["e"], allowance={"requests_per_day": 5}),
        ]
    )


@pytest.fixture(scope="module")
def suite(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, fakes: dict[str, FakeProvider]
) -> Iterator[RunningSuite]:
    redis_or_skip()
    groups = {
        "free": {"models": ["hosted-a", "tiny"], "strategy": "free_first"},
        "cool": {"models": ["tiny", "hosted-b"], "strategy": "free_first"},
        "hosted-d-or-local": {"models": ["hosted-d", "tiny"], "strategy": "ordered"},
        "free-e": {"models": ["tiny", "hosted-e"], "strategy": "free_first"},
        "dies": {"models": ["hosted-c", "tiny"], "strategy": "ordered"},
        "private": {"models": ["hosted-d", "tiny"], "strategy": "free_first"},
    }
    with running_suite(
        tmp_path_factory.mktemp("upstreams-home"),
        tiny_model,
        extra_env={
            "E2E_PROVIDER_KEY": KEY,
            "HEADRACE_HOSTED_MODELS": hosted_models(fakes),
            "HEADRACE_MODEL_GROUPS": json.dumps(groups),
            "HEADRACE_HOSTED_TIERS": '["free"]',
            "HEADRACE_ALLOWANCE_PREFIX": PREFIX,
            "HEADRACE_MODELS_REFRESH_SECONDS": "0",
        },
    ) as running:
        yield running
    client = redis_or_skip()
    for key in client.scan_iter(f"{PREFIX}*"):
        client.delete(key)


@pytest.fixture(scope="module")
def stub(suite: RunningSuite) -> Iterator[router_pb2_grpc.RouterServiceStub]:
    """A RouterService stub on the suite, through Envoy's public listener."""
    with grpc.insecure_channel(suite.public) as channel:
        yield router_pb2_grpc.RouterServiceStub(channel)


@pytest.fixture(scope="module")
def replica(suite: RunningSuite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second upstream service process sharing the suite's Redis (as a second router's
    upstream would): its target."""
    port, metrics = free_port_block(2), free_port_block(1)
    env = {**suite.env, "HEADRACE_PORT": str(port), "HEADRACE_METRICS_PORT": str(metrics)}
    log = (tmp_path_factory.mktemp("replica") / "upstream.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "headrace.services.upstream"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not serving(target) and time.monotonic() < deadline:
        time.sleep(0.2)
    yield target
    process.send_signal(signal.SIGTERM)
    process.wait(15)


def ask(
    stub: router_pb2_grpc.RouterServiceStub, suite: RunningSuite, model: str, **kw: object
) -> list[router_pb2.GenerateResponse]:
    token = kw.pop("token", None) or default_token(suite)
    request = router_pb2.GenerateRequest(
        prompt=str(kw.pop("prompt", "Hello there")),
        model=model,
        bypass_cache=True,
        params=types_pb2.SamplingParams(max_tokens=6, temperature=0.0),
    )
    return list(
        stub.Generate(request, metadata=(("authorization", f"Bearer {token}"),), timeout=30)
    )


_TOKENS: dict[str, str] = {}


def default_token(suite: RunningSuite) -> str:
    """One token for the module (issuing one runs the CLI: a second or two)."""
    if str(suite.home) not in _TOKENS:
        _TOKENS[str(suite.home)] = suite.token()
    return _TOKENS[str(suite.home)]


def served_by(replies: list[router_pb2.GenerateResponse]) -> tuple[str, str]:
    return replies[-1].model, replies[-1].provider


def replica_generate(target: str, model: str) -> grpc.RpcError | None:
    with grpc.insecure_channel(target) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        try:
            list(stub.Generate(inference_pb2.GenerateRequest(model=model, prompt="hi"), timeout=10))
        except grpc.RpcError as exc:
            return exc
    return None


def test_free_first_spends_the_allowance_then_goes_local_and_no_replica_overshoots(
    suite: RunningSuite,
    stub: router_pb2_grpc.RouterServiceStub,
    fakes: dict[str, FakeProvider],
    replica: str,
) -> None:
    token = default_token(suite)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: ask(stub, suite, "free", token=token), range(8)))
    served = [served_by(a) for a in answers]
    assert all(a[-1].finish_reason for a in answers)
    assert served.count(("hosted-a", "provider-a")) == 5
    assert served.count(("tiny", "")) == 3
    assert fakes["a"].count() == 5
    day = time.strftime("%Y-%m-%d", time.gmtime())
    used = redis_or_skip().get(f"{PREFIX}:allowance:hosted-a:requests_per_day:{day}")
    assert int(used or 0) == 5
    # A second upstream replica on the same Redis sends nothing more.
    with ThreadPoolExecutor(4) as pool:
        errors = list(pool.map(lambda _: replica_generate(replica, "hosted-a"), range(4)))
    assert all(e is not None and e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for e in errors)
    assert "requests_per_day=5 is spent" in errors[0].details()
    assert fakes["a"].count() == 5


def test_a_router_and_another_upstream_replica_at_once_never_overshoot_together(
    suite: RunningSuite,
    stub: router_pb2_grpc.RouterServiceStub,
    fakes: dict[str, FakeProvider],
    replica: str,
) -> None:
    token = default_token(suite)
    with ThreadPoolExecutor(12) as pool:
        routed = [pool.submit(ask, stub, suite, "free-e", token=token) for _ in range(6)]
        direct = [pool.submit(replica_generate, replica, "hosted-e") for _ in range(6)]
        answers = [f.result() for f in routed]
        errors = [f.result() for f in direct]
    assert all(a[-1].finish_reason for a in answers)  # every routed request succeeded
    hosted_answers = sum(served_by(a) == ("hosted-e", "provider-e") for a in answers)
    direct_ok = sum(e is None for e in errors)
    assert hosted_answers + direct_ok == 5
    assert fakes["e"].count() == 5


def test_a_429_is_served_locally_and_cools_the_upstream_down_for_every_replica(
    suite: RunningSuite,
    stub: router_pb2_grpc.RouterServiceStub,
    fakes: dict[str, FakeProvider],
    replica: str,
) -> None:
    fake = fakes["b"]
    fake.mode, fake.retry_after = "429", 10
    store, key = redis_or_skip(), f"{PREFIX}:cooldown:hosted-b"
    # free_first puts the hosted model first, whatever the order listed.
    assert served_by(ask(stub, suite, "cool")) == ("tiny", "")
    assert fake.count() == 1
    fake.mode = "ok"
    assert 0 < store.pttl(key) <= 10000
    assert served_by(ask(stub, suite, "cool")) == ("tiny", "")
    refused = replica_generate(replica, "hosted-b")
    assert refused is not None and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "cooling down" in refused.details()
    assert store.pttl(key) > 0, "too slow to see the cool-down at work"
    assert fake.count() == 1  # nothing sent during the cool-down, by either replica
    while store.pttl(key) > 0:
        time.sleep(0.2)
    assert served_by(ask(stub, suite, "cool")) == ("hosted-b", "provider-b")
    assert fake.count() == 2


def test_the_openai_api_streams_a_hosted_models_answer_and_names_its_provider(
    suite: RunningSuite, fakes: dict[str, FakeProvider]
) -> None:
    body = {
        "model": "hosted-d",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "max_tokens": 6,
        "stream": True,
    }
    request = urllib.request.Request(
        f"{suite.openai_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={
            "authorization": f"Bearer {default_token(suite)}",
            "content-type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        assert reply.headers["x-headrace-provider"] == "provider-d"
        lines = reply.read().decode().splitlines()
    chunks = parse_sse(lines)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hosted answer here." and chunks[0]["model"] == "hosted-d"
    # The conversation reached the provider as OpenAI messages, roles and all.
    assert fakes["d"].received[-1].body["messages"] == body["messages"]


def test_an_upstream_dying_mid_stream_ends_it_unavailable_and_the_next_goes_local(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["c"]
    fake.mode = "die"
    texts: list[str] = []
    with pytest.raises(grpc.RpcError) as raised:
        for reply in stub.Generate(
            router_pb2.GenerateRequest(prompt="Hello", model="dies", bypass_cache=True),
            metadata=(("authorization", f"Bearer {default_token(suite)}"),),
            timeout=30,
        ):
            texts.append(reply.text)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "hosted-c" in raised.value.details()
    # After the first token (the output filter may still hold back the last words).
    assert "".join(texts) and "Hosted answer".startswith("".join(texts))
    fake.stop()  # the provider is gone now
    started = time.monotonic()
    assert served_by(ask(stub, suite, "dies")) == ("tiny", "")
    assert time.monotonic() - started < 5


def test_a_client_that_cancels_closes_the_upstream_request(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["d"]
    fake.reset()
    fake.words = tuple(f" w{i}" for i in range(40))
    fake.chunk_delay_s = 0.1
    try:
        stream = stub.Generate(
            router_pb2.GenerateRequest(prompt="Count", model="hosted-d", bypass_cache=True),
            metadata=(("authorization", f"Bearer {default_token(suite)}"),),
            timeout=30,
        )
        next(stream)
        stream.cancel()
        deadline = time.monotonic() + 10
        while fake.cancelled == 0:
            assert time.monotonic() < deadline, "the provider's stream was never closed"
            time.sleep(0.1)
    finally:
        fake.words, fake.chunk_delay_s = FakeProvider.words, 0.02
    assert fake.count() == 1


def test_privacy_opt_in_redaction_and_keys_kept_out_of_everything(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub, fakes: dict[str, FakeProvider]
) -> None:
    fake = fakes["d"]
    fake.reset()
    fake.echo_key_in_errors = KEY
    # A tier that has not opted in never reaches the hosted model.
    outsider = suite.token("outsider", "--tier", "unlimited")
    assert served_by(ask(stub, suite, "hosted-d-or-local", token=outsider)) == ("tiny", "")
    with pytest.raises(grpc.RpcError) as raised:
        ask(stub, suite, "hosted-d", token=outsider)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert fake.count() == 0
    # An opted-in tier's secret reaches the provider redacted.
    replies = ask(stub, suite, "hosted-d", prompt=f"My AWS key is {AWS}, keep it safe")
    assert served_by(replies) == ("hosted-d", "provider-d")
    sent = json.dumps(fake.received[-1].body)
    assert AWS not in sent and "My AWS key is" in sent
    # The provider fails and echoes its key: the client's error and every log is clean.
    fake.mode = "500"
    with pytest.raises(grpc.RpcError) as raised:
        ask(stub, suite, "hosted-d")
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "HTTP 500" in raised.value.details() and KEY not in raised.value.details()
    fake.mode = "ok"
    time.sleep(1.5)  # audit lines and logs are written off the request path
    fragment = KEY[7:19].encode()
    for path in suite.home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert KEY.encode() not in data and fragment not in data, path
    for service in ("router", "upstream"):
        from urllib.request import urlopen

        with urlopen(f"http://127.0.0.1:{suite.metrics_ports[service]}/metrics", timeout=5) as r:
            assert fragment not in r.read()
    client = redis_or_skip()
    for key in client.scan_iter("*"):
        assert fragment not in key
        kind = client.type(key)
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"hash":
            values = list(client.hgetall(key).values())
        elif kind == b"list":
            values = client.lrange(key, 0, -1)
        else:
            values = []
        assert not any(fragment in value for value in values), key
    audit = [
        json.loads(line)
        for path in (suite.home / "audit").rglob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert any(line.get("provider") == "provider-d" for line in audit)


def test_hosted_requests_succeed_while_local_inference_is_killed(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub, fakes: dict[str, FakeProvider]
) -> None:
    os.kill(suite.pid("inference-0"), signal.SIGKILL)
    # Straight away (the launcher restarts it within seconds): the catalog cannot list
    # local models, hosted ones still answer. (Last in the module: nothing after it
    # needs the local model.)
    for _ in range(3):
        assert served_by(ask(stub, suite, "hosted-d")) == ("hosted-d", "provider-d")
