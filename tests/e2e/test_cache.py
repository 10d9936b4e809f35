"""The response cache through Envoy: replay, single-flight, cancellation, fail-open
when Redis dies and recovery when it returns, and the admin commands."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.types.v1 import types_pb2
from tests.support.faults import PrivateRedis
from tests.support.suite import RunningSuite, running_suite

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def suite(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, redis_server: PrivateRedis
) -> Iterator[RunningSuite]:
    with running_suite(
        tmp_path_factory.mktemp("cache-home"),
        tiny_model,
        extra_env={"HEADRACE_REDIS_URL": redis_server.url, "HEADRACE_QUEUE_SIZE": "64"},
    ) as running:
        yield running


def request(prompt: str, max_tokens: int = 16) -> router_pb2.GenerateRequest:
    return router_pb2.GenerateRequest(
        prompt=prompt, params=types_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0)
    )


_TOKENS: dict[str, str] = {}


def token_for(suite: RunningSuite) -> str:
    """One token per suite (minting runs the CLI, which costs a few hundred ms)."""
    if suite.public not in _TOKENS:
        _TOKENS[suite.public] = suite.token("cache-tester")
    return _TOKENS[suite.public]


def run(
    stub: router_pb2_grpc.RouterServiceStub, suite: RunningSuite, req: router_pb2.GenerateRequest
) -> list[router_pb2.GenerateResponse]:
    metadata = (("authorization", f"Bearer {token_for(suite)}"),)
    return list(stub.Generate(req, metadata=metadata, timeout=60))


def text(messages: list[router_pb2.GenerateResponse]) -> str:
    return "".join(m.text for m in messages)


def fresh(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:10]}"


def test_a_repeated_request_replays_the_same_text_from_cache_in_under_half_the_time(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    req = request(fresh("Tell me a long story"), max_tokens=300)
    token_for(suite)
    started = time.perf_counter()
    first = run(stub, suite, req)
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    second = run(stub, suite, req)
    second_s = time.perf_counter() - started
    assert text(second) == text(first)
    assert not any(m.cached for m in first) and all(m.cached for m in second)
    assert second[-1].usage == first[-1].usage
    assert len([m for m in second if m.text]) > 1, "replayed chunked like the original"
    assert second_s < first_s / 2, (first_s, second_s)


def test_eight_identical_concurrent_requests_run_inference_once(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    name = "headrace_inference_requests_total"
    before = sum(
        suite.metric("inference-0", name, model="tiny", finish_reason=r)
        for r in ("stop", "length", "cancelled")
    )
    req = request(fresh("Everyone asks this"), max_tokens=200)
    results: list[list[router_pb2.GenerateResponse]] = []
    barrier = threading.Barrier(8)

    def one() -> None:
        barrier.wait()
        results.append(run(stub, suite, req))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 8
    assert len({text(r) for r in results}) == 1
    after = sum(
        suite.metric("inference-0", name, model="tiny", finish_reason=r)
        for r in ("stop", "length", "cancelled")
    )
    assert after - before == 1
    assert sum(1 for r in results if not r[0].cached) == 1


def test_a_cancelled_stream_stores_nothing(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    req = request(fresh("Cancel me"), max_tokens=3000)
    call = stub.Generate(
        req, metadata=(("authorization", f"Bearer {token_for(suite)}"),), timeout=60
    )
    assert all(next(call).text for _ in range(3))
    call.cancel()
    time.sleep(0.3)
    # The first message of the same request says whether the cache answered; the rest
    # (3,000 tokens) is not needed.
    again = stub.Generate(
        request(req.prompt, max_tokens=3000),
        metadata=(("authorization", f"Bearer {token_for(suite)}"),),
        timeout=60,
    )
    assert not next(again).cached
    again.cancel()


def test_cache_stats_and_flush_commands(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    req = request(fresh("flush me"))
    run(stub, suite, req)

    def cli(*args: str) -> str:
        out = subprocess.run(
            [str(BIN / "headrace"), "cache", *args, "--target", suite.public],
            env=suite.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    stats = cli("stats")
    assert "backend:  redis" in stats and "entries:" in stats
    assert "deleted" in cli("flush", "--model", "tiny")
    assert not run(stub, suite, req)[0].cached, "flushed entries are gone"


def test_requests_keep_succeeding_while_redis_is_down_and_hits_resume_after(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub, redis_server: PrivateRedis
) -> None:
    warm = request(fresh("before the outage"))
    run(stub, suite, warm)
    assert run(stub, suite, warm)[0].cached
    redis_server.kill()
    try:
        during = request(fresh("during the outage"))
        for _ in range(3):
            messages = run(stub, suite, during)
            assert messages[-1].finish_reason == types_pb2.FINISH_REASON_LENGTH
            assert not messages[0].cached
    finally:
        redis_server.start()
    after = request(fresh("after the outage"))
    run(stub, suite, after)
    deadline = time.monotonic() + 10
    while not run(stub, suite, after)[0].cached:
        assert time.monotonic() < deadline, "hits did not resume after Redis came back"
        time.sleep(0.2)
    assert "redis_unavailable_cache_misses" in suite.log()
