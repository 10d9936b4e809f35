"""Redis stopped mid-run (issue #9): still serving, the cache off, quotas in process.

The suite runs on a redis-server of this module's own. Killed, then frozen
(SIGSTOP: a Redis that accepts connections and never answers), Redis must cost
requests no more than its timeouts: Generate is served, uncached, the cache says
so in its log and in `headrace_cache_redis_up`, and quotas still hold (counted in
process). When Redis is back the cache and the shared quotas resume on their own.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.types.v1 import types_pb2
from tests.support.faults import REDIS_SERVER, PrivateRedis, bearer, log_events, until
from tests.support.suite import RunningSuite, running_suite

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server on PATH"),
]

TIERS = {
    "free": {"requests_per_minute": 100000, "tokens_per_day": 10_000_000},
    "tight": {"requests_per_minute": 2},
}
# Redis costs a request at most its timeouts: cache lookup and store (0.1 s
# each), auth's admission (0.2 s; usage is recorded off the request path); the
# rest is a tiny model. The margin is for a shared, loaded machine; requests
# left to Redis's socket timeout (1 s a call, three calls) would exceed it.
SERVED_WITHIN_S = 2.0


@pytest.fixture(scope="module")
def suite(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, redis_server: PrivateRedis
) -> Iterator[RunningSuite]:
    with running_suite(
        tmp_path_factory.mktemp("faults-redis-home"),
        tiny_model,
        extra_env={"HEADRACE_REDIS_URL": redis_server.url, "HEADRACE_TIERS": json.dumps(TIERS)},
    ) as running:
        yield running


@pytest.fixture(scope="module")
def metadata(suite: RunningSuite) -> tuple[tuple[str, str]]:
    return bearer(suite.token("redis-faults"))


def cacheable(label: str) -> router_pb2.GenerateRequest:
    return router_pb2.GenerateRequest(
        prompt=f"{label} {uuid.uuid4().hex[:8]}",
        params=types_pb2.SamplingParams(max_tokens=12, temperature=0.0),
    )


def served(
    stub: router_pb2_grpc.RouterServiceStub,
    metadata: tuple[tuple[str, str]],
    req: router_pb2.GenerateRequest,
) -> list[router_pb2.GenerateResponse]:
    """The request's answer, checked complete and served within SERVED_WITHIN_S."""
    started = time.monotonic()
    messages = list(stub.Generate(req, metadata=metadata, timeout=10))
    took = time.monotonic() - started
    assert messages[-1].finish_reason == types_pb2.FINISH_REASON_LENGTH
    assert took < SERVED_WITHIN_S, f"took {took:.2f} s"
    return messages


def redis_up(suite: RunningSuite) -> float:
    return suite.metric("cache", "headrace_cache_redis_up")


def test_redis_killed_serves_uncached_keeps_quotas_and_recovers(
    suite: RunningSuite,
    stub: router_pb2_grpc.RouterServiceStub,
    metadata: tuple[tuple[str, str]],
    redis_server: PrivateRedis,
) -> None:
    before = cacheable("cached before the outage")
    served(stub, metadata, before)
    assert all(m.cached for m in served(stub, metadata, before))
    assert redis_up(suite) == 1
    errors = suite.metric("cache", "headrace_cache_errors_total", op="get")

    redis_server.kill()
    try:
        for _ in range(3):
            assert not any(m.cached for m in served(stub, metadata, before))
        assert redis_up(suite) == 0
        assert suite.metric("cache", "headrace_cache_errors_total", op="get") > errors
        assert log_events(suite, "redis_unavailable_cache_misses", service="cache")
        assert log_events(suite, "redis_unavailable_limits_in_process", service="auth")
        # Quotas still hold, counted in process: a tier of 2 requests a minute.
        tight = bearer(suite.token("tight-during-outage", "--tier", "tight"))
        for _ in range(2):
            served(stub, tight, cacheable("tight"))
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Generate(cacheable("tight"), metadata=tight, timeout=10))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        redis_server.start()

    # Back: redis-py reconnects on the next call; entries stored from now are hits.
    after = cacheable("cached after the outage")

    def cached_again() -> bool:
        served(stub, metadata, after)
        return all(m.cached for m in served(stub, metadata, after))

    until(cached_again, 10, "the cache uses Redis again")
    assert redis_up(suite) == 1
    assert log_events(suite, "redis_recovered", service="cache")
    until(lambda: log_events(suite, "redis_recovered_limits", service="auth"), 5, "auth back")


def test_redis_frozen_costs_requests_no_more_than_its_timeouts(
    suite: RunningSuite,
    stub: router_pb2_grpc.RouterServiceStub,
    metadata: tuple[tuple[str, str]],
    redis_server: PrivateRedis,
) -> None:
    before = cacheable("cached before the freeze")
    text = "".join(m.text for m in served(stub, metadata, before))
    assert all(m.cached for m in served(stub, metadata, before))

    redis_server.freeze()
    try:
        for _ in range(3):
            assert not any(m.cached for m in served(stub, metadata, before))
        assert redis_up(suite) == 0
    finally:
        redis_server.thaw()

    # Commands that timed out were still queued in the frozen Redis; their late
    # replies must not be read as answers to later commands (the client drops a
    # connection whose command was cancelled), so the hit is the right entry.
    def hit_again() -> bool:
        messages = served(stub, metadata, before)
        return all(m.cached for m in messages) and "".join(m.text for m in messages) == text

    until(hit_again, 10, "hits (of the right entry) resume after the freeze")
    assert redis_up(suite) == 1
    other = cacheable("stored after the freeze")
    other_text = "".join(m.text for m in served(stub, metadata, other))
    replay = served(stub, metadata, other)
    assert all(m.cached for m in replay) and "".join(m.text for m in replay) == other_text
